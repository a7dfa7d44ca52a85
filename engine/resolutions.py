"""How a market is resolved, and what each kind of resolution pays: exact integer rules, no I/O.

Three kinds (the contract's "Markets with more outcomes ..." section, bullet "Resolve"):

* ``OUTCOME``: one label wins; each of its shares pays ``1.000000``.
* ``PROB``: a probability per label (micro-units, each 0..1,000,000, summing to exactly
  1,000,000); a holder gets ``floor(sum_i p_i * shares_i / 10^6)`` over all of their shares of
  the market, in one payout.
* ``CANCEL``: each user who traded the market gets back ``max(0, sum of net costs)`` over its
  outcomes (buys minus sells, kept by lua/trade.lua even at zero shares); if those refunds add
  up to more than the pool had at resolution, each is scaled by ``pool / total`` and floored.

The market hash (and the record) keep ``outcome`` = the label, ``PROB`` or ``CANCEL``, and for
PROB ``probabilities`` as JSON text ``{"<label>":"0.250000",...}`` in label order. Labels are
plain strings everywhere here: nothing below assumes YES/NO but :func:`market_labels`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from predmarket.engine.errors import ValidationError
from predmarket.engine.labels import labels_of
from predmarket.engine.units import MICRO, UnitError, format_micro, parse_micro

PROB = "PROB"
CANCEL = "CANCEL"


class ResolutionType(StrEnum):
    OUTCOME = "OUTCOME"
    PROB = "PROB"
    CANCEL = "CANCEL"


@dataclass(frozen=True, slots=True)
class Resolution:
    """One resolution: build it with :meth:`of_outcome`, :meth:`prob` or :meth:`cancel`."""

    type: ResolutionType
    #: OUTCOME: the winning label
    label: str | None = None
    #: PROB: (label, micro-probability) in the market's label order
    probabilities: tuple[tuple[str, int], ...] | None = None

    @classmethod
    def of_outcome(cls, label: str) -> Resolution:
        return cls(ResolutionType.OUTCOME, label=str(label))

    @classmethod
    def prob(cls, probabilities: Iterable[tuple[str, int]]) -> Resolution:
        return cls(ResolutionType.PROB, probabilities=tuple((str(k), int(v)) for k, v in probabilities))

    @classmethod
    def cancel(cls) -> Resolution:
        return cls(ResolutionType.CANCEL)

    @property
    def outcome(self) -> str:
        """What the market's ``outcome`` field holds: the label, ``PROB`` or ``CANCEL``."""
        if self.type is ResolutionType.OUTCOME:
            assert self.label is not None
            return self.label
        return self.type.value

    def probabilities_text(self) -> str:
        """PROB's probabilities as the hash, the event and the record keep them; '' otherwise."""
        return probabilities_text(self.probabilities) if self.probabilities is not None else ""

    def check(self, labels: tuple[str, ...]) -> Resolution:
        """This resolution, checked against a market of ``labels`` (PROB's put in their order);
        raises ValidationError if it does not fit."""
        if self.type is ResolutionType.OUTCOME:
            if self.label not in labels:
                raise ValidationError(f"outcome must be one of {', '.join(labels)}")
            return self
        if self.type is ResolutionType.CANCEL:
            return self
        assert self.probabilities is not None
        given = dict(self.probabilities)
        if len(given) != len(self.probabilities) or set(given) != set(labels):
            raise ValidationError(f"probabilities must name every outcome once: {', '.join(labels)}")
        if any(not 0 <= p <= MICRO for p in given.values()):
            raise ValidationError("each probability must lie between 0 and 1")
        if sum(given.values()) != MICRO:
            raise ValidationError("probabilities must sum to exactly 1.000000")
        return Resolution.prob((label, given[label]) for label in labels)


def market_labels(fields: Mapping[str, str]) -> tuple[str, ...]:
    """A market's outcome labels in creation order, from its hash (engine/labels.py)."""
    return labels_of(fields)


def parse_probability(value: object) -> int:
    """A request's probability (decimal string or JSON number, 0..1, at most 6 decimals) in micro-units."""
    try:
        micro = parse_micro(value)
    except UnitError as exc:
        raise ValidationError(f"probability: {exc}") from None
    if micro > MICRO:
        raise ValidationError("each probability must lie between 0 and 1")
    return micro


def probabilities_text(probabilities: Iterable[tuple[str, int]]) -> str:
    """``{"YES":"0.250000","NO":"0.750000"}``: compact, in the given order (one spelling everywhere)."""
    return json.dumps({label: format_micro(p) for label, p in probabilities}, separators=(",", ":"))


def parse_probabilities_text(text: str) -> tuple[tuple[str, int], ...]:
    """The inverse of :func:`probabilities_text`, in the text's order."""
    parsed = json.loads(text)
    if not isinstance(parsed, dict):
        raise ValueError("probabilities must be a JSON object")
    return tuple((str(label), parse_probability(p)) for label, p in parsed.items())


def prob_payout(probabilities: Mapping[str, int], shares: Mapping[str, int]) -> int:
    """A PROB holder's payout: ``floor(sum_i p_i * shares_i / 10^6)``, exactly."""
    return sum(probabilities.get(label, 0) * held for label, held in shares.items()) // MICRO


def refund_due(net_costs: Iterable[int]) -> int:
    """A CANCEL refund before scaling: what the user put into the market net, never below zero."""
    return max(0, sum(net_costs))


def scaled_refunds(due: Mapping[str, int], pool: int) -> dict[str, int]:
    """Each user's refund: ``due`` itself, or ``floor(due * pool / total)`` when the refunds exceed the pool."""
    total = sum(due.values())
    if total <= pool:
        return dict(due)
    return {user_id: amount * pool // total for user_id, amount in due.items()}


def split_exact(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """``total`` shared out by ``weights`` (non-negative), floored, the micro-units the floors leave
    given to the heaviest (the first of equals): the parts add up to ``total`` exactly. How a user's
    one PROB payout or CANCEL refund is shown position by position (engine/positions.py,
    api/positions.py); with no weight at all everything goes to the first key, if any."""
    if not weights:
        return {}
    whole = sum(weights.values())
    if whole == 0:
        first = next(iter(weights))
        return {key: total if key == first else 0 for key in weights}
    parts = {key: total * weight // whole for key, weight in weights.items()}
    heaviest = max(weights, key=lambda key: weights[key])  # max keeps the first of equals
    parts[heaviest] += total - sum(parts.values())
    return parts
