"""attention-market: an agent-based simulator of attention-economy marketplaces.

    import simulator
    scenario = simulator.load_scenario("scenarios/baseline.yaml", overrides={"ticks": 50})
    result = simulator.run(scenario)
    result.metrics   # one row per tick
    result.summary   # headline figures
"""

from .model import AttentionMarket
from .panels import load_panels
from .rundir import load_run
from .runner import RunResult, run, summarize
from .scenario import Scenario, ScenarioError, load_scenario
from .sweep import SweepResult, load_sweep, run_sweep
from .comparison import compare  # noqa: E402

__all__ = [
    "AttentionMarket",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "SweepResult",
    "compare",
    "load_panels",
    "load_run",
    "load_scenario",
    "load_sweep",
    "run",
    "run_sweep",
    "summarize",
]
__version__ = "0.1.0"
