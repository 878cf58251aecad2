"""attention-market: an agent-based simulator of attention-economy marketplaces.

    import simulator
    scenario = simulator.load_scenario("scenarios/baseline.yaml", overrides={"ticks": 50})
    result = simulator.run(scenario)
    result.metrics   # one row per tick
    result.summary   # headline figures
"""

from .model import AttentionMarket
from .rundir import load_run
from .runner import RunResult, run, summarize
from .scenario import Scenario, ScenarioError, load_scenario

__all__ = ["AttentionMarket", "RunResult", "Scenario", "ScenarioError", "load_run", "load_scenario", "run", "summarize"]
__version__ = "0.1.0"
