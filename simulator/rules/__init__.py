"""The rules layer: allocation rules and their engine, payout rules, auction formats, bidding strategies.

Importing it registers every built-in rule in its kind's registry (`simulator/registry.py`);
`ruleset.RuleSet.of(scenario)` builds the rules a run uses.
"""

from simulator.rules.allocation import learned, popularity, query_key, shapley, viability  # noqa: F401  (register the built-in allocation rules)
from simulator.rules.ruleset import RuleSet

__all__ = ["RuleSet"]
