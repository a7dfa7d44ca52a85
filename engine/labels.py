"""A market's outcome labels and where each label's numbers live in its Redis hash.

A market has 2 to 16 labels in creation order (the contract's "Markets with more outcomes").
A YES/NO market, the default, keeps the layout it always had: no ``outcomes`` field, its
totals in ``q_yes`` / ``q_no`` and ``settled_yes`` / ``settled_no``. Any other market names
its labels in the field ``outcomes`` (comma-joined: a label is ``[A-Za-z0-9_-]``, so no comma)
and keeps label ``L``'s totals in ``q:L`` and ``settled:L``, except that the labels YES and NO
always use ``q_yes`` / ``q_no`` (one rule per label, whatever market it is in; lua/lib.lua's
``q_field`` and ``settled_field`` are the same rule).

Positions and net costs need no change: their fields are ``<user>:<label>`` and
``<market>:<label>`` for every market.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from predmarket.engine.errors import ValidationError

YES_NO: tuple[str, ...] = ("YES", "NO")
MIN_OUTCOMES = 2
MAX_OUTCOMES = 16
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
#: names a resolution takes in the market's ``outcome`` field, so no label may be one
RESERVED = frozenset({"CANCEL", "PROB"})
LABEL_SEPARATOR = ","


def q_field(label: str) -> str:
    """The market hash's field holding ``label``'s outstanding shares."""
    if label == "YES":
        return "q_yes"
    if label == "NO":
        return "q_no"
    return f"q:{label}"


def settled_field(label: str) -> str:
    """The market hash's field counting ``label``'s shares settlement has removed."""
    if label == "YES":
        return "settled_yes"
    if label == "NO":
        return "settled_no"
    return f"settled:{label}"


def labels_of(fields: Mapping[str, str]) -> tuple[str, ...]:
    """The labels of a market from its hash (or its archived copy): YES/NO when it names none."""
    text = fields.get("outcomes")
    return tuple(text.split(LABEL_SEPARATOR)) if text else YES_NO


def labels_field(labels: Sequence[str]) -> str:
    """The ``outcomes`` field for ``labels``: '' for a YES/NO market (whose hash has none)."""
    return "" if tuple(labels) == YES_NO else LABEL_SEPARATOR.join(labels)


def totals_of(fields: Mapping[str, str], labels: Sequence[str]) -> tuple[int, ...]:
    """Each label's outstanding shares, in label order."""
    return tuple(int(fields.get(q_field(label)) or 0) for label in labels)


def settled_of(fields: Mapping[str, str], labels: Sequence[str]) -> tuple[int, ...]:
    """Each label's settled shares, in label order."""
    return tuple(int(fields.get(settled_field(label)) or 0) for label in labels)


def check_labels(labels: Sequence[str] | None) -> tuple[str, ...]:
    """A creation's ``outcomes`` checked (2-16 unique labels of the pattern, none reserved); YES/NO if None."""
    if labels is None:
        return YES_NO
    if not MIN_OUTCOMES <= len(labels) <= MAX_OUTCOMES:
        raise ValidationError(f"outcomes must hold {MIN_OUTCOMES} to {MAX_OUTCOMES} labels")
    for label in labels:
        if not isinstance(label, str) or not LABEL_PATTERN.match(label):
            raise ValidationError("each outcome label must match ^[A-Za-z0-9_-]{1,32}$")
        if label in RESERVED:
            raise ValidationError(f"{label} is reserved and cannot be an outcome label")
    if len(set(labels)) != len(labels):
        raise ValidationError("outcome labels must be unique")
    return tuple(labels)


def decimal_map(labels: Sequence[str], values: Sequence[str]) -> str:
    """JSON text ``{"<label>": "<decimal>", ...}`` in label order, as the events carry prices and shares."""
    return json.dumps(dict(zip(labels, values, strict=True)), separators=(",", ":"))
