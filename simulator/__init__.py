"""attention-market: an agent-based simulator of attention-economy marketplaces.

    import simulator
    scenario = simulator.load_scenario("scenarios/baseline.yaml", overrides={"ticks": 50})
    result = simulator.run(scenario)
    result.metrics   # one row per tick
    result.summary   # headline figures
"""

from simulator.analysis.comparison import compare  # noqa: E402
from simulator.metrics.panels import load_panels
from simulator.model import AttentionMarket
from simulator.runs.checkpoint import load_checkpoint, save_checkpoint
from simulator.runs.driver import RunResult, run, summarize
from simulator.runs.rundir import load_run
from simulator.runs.sweep import SweepResult, load_sweep, run_sweep
from simulator.scenario.schema import Scenario, ScenarioError, load_scenario

__all__ = [
    "AttentionMarket",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "SweepResult",
    "compare",
    "load_checkpoint",
    "load_panels",
    "load_run",
    "load_scenario",
    "load_sweep",
    "run",
    "run_sweep",
    "save_checkpoint",
    "summarize",
]
__version__ = "0.1.0"
