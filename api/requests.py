"""Strict request bodies: pydantic models whose numbers go through ``engine.units.parse_micro``.

Bodies are read by a dependency declared *after* authentication, so the
contract's order of checks (401, 403, then 422) holds even for malformed JSON.
Unknown fields, wrong types, non-JSON content and bad numbers are all
``VALIDATION_ERROR``; the OpenAPI document describes the same models.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
import pydantic
from fastapi import Depends, Request
from predmarket.engine.errors import ValidationError
from predmarket.engine.labels import LABEL_PATTERN, RESERVED
from predmarket.engine.resolutions import Resolution, parse_probability
from predmarket.engine.units import UnitError, parse_micro
from pydantic import BaseModel, ConfigDict, PlainValidator, WithJsonSchema

DECIMAL_JSON_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,6})?$"},
        {"type": "number", "minimum": 0},
    ],
    "description": "decimal string or JSON number, at most 6 decimals",
}


def _micro(value: object) -> int:
    try:
        return parse_micro(value)
    except UnitError as exc:
        raise ValueError(str(exc)) from None


#: A request amount: decimal string or JSON number, parsed to micro-units (int).
Micro = Annotated[int, PlainValidator(_micro), WithJsonSchema(DECIMAL_JSON_SCHEMA)]

#: ``"shares": "all"``: sell the whole position (SELL only, checked with the order's shape).
ALL = "all"


def _shares(value: object) -> int | str:
    return ALL if value == ALL else _micro(value)


#: A trade's shares: a quantity as :data:`Micro`, or the string "all".
Shares = Annotated[int | str, PlainValidator(_shares), WithJsonSchema({
    "anyOf": [*DECIMAL_JSON_SCHEMA["anyOf"], {"type": "string", "enum": [ALL]}],
    "description": 'decimal string or JSON number, at most 6 decimals; or "all" (SELL only: the whole position)',
})]


def _label(value: object) -> str:
    if not isinstance(value, str) or not LABEL_PATTERN.match(value):
        raise ValueError("an outcome label must match ^[A-Za-z0-9_-]{1,32}$")
    if value in RESERVED:
        raise ValueError(f"{value} is reserved and is no outcome label")
    return value


#: An outcome label (its shape only: whether the market has it is the engine's to say, after 404 and 409).
Label = Annotated[str, PlainValidator(_label), WithJsonSchema({
    "type": "string", "pattern": LABEL_PATTERN.pattern, "description": "an outcome label of the market",
})]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CreateUser(Body):
    username: str
    user_id: str | None = None


class AmountBody(Body):
    amount: Micro


class CreateMarket(Body):
    name: str
    liquidity_b: Micro
    market_id: str | None = None
    #: the outcome labels in their order: 2-16 unique labels, CANCEL and PROB reserved; by default
    #: ``["YES", "NO"]`` (checked by engine.labels.check_labels)
    outcomes: list[str] | None = None
    #: when trading stops, RFC 3339 with a zone (``2027-01-01T00:00:00Z``); must lie in the future
    close_time: str | None = None


def _probability(value: object) -> int:
    try:
        return parse_probability(value)
    except ValidationError as exc:
        raise ValueError(str(exc)) from None


#: A PROB resolution's probability: decimal string or JSON number, 0..1, at most 6 decimals (micro-units).
Probability = Annotated[int, PlainValidator(_probability), WithJsonSchema({
    **DECIMAL_JSON_SCHEMA, "description": "a probability between 0 and 1: decimal string or JSON number, "
                                          "at most 6 decimals"})]


class Resolve(Body):
    """Exactly one of: ``outcome`` (the winning label), ``probabilities`` (PROB: every label, summing to
    exactly 1.000000) or ``cancel: true`` (CANCEL: net costs refunded). The labels are checked against
    the market's by the engine."""

    outcome: Label | None = None
    probabilities: dict[Label, Probability] | None = None
    cancel: Literal[True] | None = None

    @pydantic.model_validator(mode="after")
    def _exactly_one(self) -> Resolve:
        if sum(v is not None for v in (self.outcome, self.probabilities, self.cancel)) != 1:
            raise ValueError("exactly one of outcome, probabilities and cancel is required")
        return self

    def resolution(self) -> Resolution:
        if self.outcome is not None:
            return Resolution.of_outcome(self.outcome)
        if self.probabilities is not None:
            return Resolution.prob(self.probabilities.items())
        return Resolution.cancel()


class TradeBody(Body):
    side: Literal["BUY", "SELL"]
    #: a label of the market (a well-formed label the market lacks is refused by the engine)
    outcome: Label
    shares: Shares | None = None
    amount: Micro | None = None
    max_cost: Micro | None = None
    min_proceeds: Micro | None = None


B = TypeVar("B", bound=Body)


def _describe(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def body_of(model: type[B]) -> Callable[[Request], Awaitable[B]]:
    """A dependency reading the request body as ``model`` (after auth, see module doc)."""

    async def read(request: Request) -> B:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ValidationError("the body must be application/json")
        raw = await request.body()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValidationError(f"malformed JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValidationError("the body must be a JSON object")
        try:
            return model.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ValidationError(_describe(exc)) from None

    return read


def body_doc(model: type[Body]) -> dict[str, Any]:
    """``openapi_extra`` documenting ``model`` as the JSON request body."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": model.model_json_schema(ref_template="#/components/schemas/{model}"),
    }}}}


CreateUserBody = Annotated[CreateUser, Depends(body_of(CreateUser))]
AmountJson = Annotated[AmountBody, Depends(body_of(AmountBody))]
CreateMarketBody = Annotated[CreateMarket, Depends(body_of(CreateMarket))]
ResolveBody = Annotated[Resolve, Depends(body_of(Resolve))]
TradeJson = Annotated[TradeBody, Depends(body_of(TradeBody))]


_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$")


def close_time_ms(text: str) -> int:
    """An RFC 3339 time with its zone as milliseconds since the epoch, rounded up: a close time is
    never moved earlier (``2027-01-01T00:00:00.0004Z`` closes at .001)."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValidationError("close_time must be an RFC 3339 time with a zone, e.g. 2027-01-01T00:00:00Z")
    date, clock, fraction, zone = match.groups()
    try:
        moment = datetime.fromisoformat(f"{date}T{clock}{'+00:00' if zone in 'Zz' else zone}")
    except ValueError:
        raise ValidationError("close_time is not a valid date and time") from None
    digits = (fraction or "").ljust(3, "0")
    extra_ms = int(digits[:3]) + (1 if digits[3:].strip("0") else 0)
    return int(moment.timestamp()) * 1000 + extra_ms
