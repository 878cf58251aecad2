"""The auction formats and bidding strategies as registered rules, with the line `attnsim rules` prints.

Auction formats are priced inside the compiled auction (`auction.py`): a format names one of its
pricing branches (`code`), so a new pricing rule is a branch there plus a class here. Bidding
strategies are plain Python (`bidding.py`): a plug-in strategy subclasses `BiddingStrategy`.
"""

from __future__ import annotations

from abc import ABC
from typing import ClassVar

from simulator.registry import define_kind
from simulator.rules.auction import FORMATS


class AuctionFormat(ABC):
    """An ad auction's pricing rule; the ranking (bid × predicted click rate) is the same for all."""

    name: ClassVar[str]
    summary: ClassVar[str]
    code: ClassVar[int]  # the compiled auction's pricing branch


def check_format(cls: type) -> list[str]:
    if not (isinstance(cls, type) and issubclass(cls, AuctionFormat)):
        return ["the base class simulator.rules.formats.AuctionFormat"]
    missing = [f"`{name}`" for name in ("name", "summary") if not isinstance(getattr(cls, name, None), str)]
    if getattr(cls, "code", None) not in FORMATS.values():
        missing.append(f"`code`, one of the compiled auction's pricing branches {sorted(FORMATS.values())} (simulator/rules/auction.py)")
    return missing


AUCTION_FORMATS = define_kind("auction", check_format)


class SecondPrice(AuctionFormat):
    name = "second_price"
    summary = "VCG per click: each winner pays the externality it imposes on the bidders below it (truthful)"
    code = FORMATS["second_price"]


class FirstPrice(AuctionFormat):
    name = "first_price"
    summary = "each winner pays its own bid"
    code = FORMATS["first_price"]


class GeneralisedSecondPrice(AuctionFormat):
    name = "gsp"
    summary = "generalised second price: the least bid that keeps the winner's rank"
    code = FORMATS["gsp"]


for _format in (SecondPrice, FirstPrice, GeneralisedSecondPrice):
    AUCTION_FORMATS.register(_format)
