"""The rules in force in one run, built once from its scenario through the registries."""

from __future__ import annotations

from dataclasses import dataclass

from simulator.rules.allocation.base import AllocationRule
from simulator.rules.allocation.engine import make_rule
from simulator.rules.bidding import BIDDING_STRATEGIES, BiddingStrategy
from simulator.rules.formats import AUCTION_FORMATS, AuctionFormat
from simulator.rules.payout import PayoutRule, make_payout_rule
from simulator.scenario.schema import Scenario


@dataclass
class RuleSet:
    """One object per kind: the allocation rule (which may keep state), payout rule, auction format and bidding strategy."""

    allocation: AllocationRule
    payout: PayoutRule
    auction: AuctionFormat
    bidding: BiddingStrategy

    @classmethod
    def of(cls, scenario: Scenario) -> RuleSet:
        return cls(
            allocation=make_rule(scenario),
            payout=make_payout_rule(scenario),
            auction=AUCTION_FORMATS.resolve(scenario.circulation.auction.format)(),
            bidding=BIDDING_STRATEGIES.resolve(scenario.population.advertisers.bidding)(),
        )
