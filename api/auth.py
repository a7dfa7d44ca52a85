"""Bearer-token authentication, the authorisation rules, and the per-user rate limit.

The admin token comes from ``PM_ADMIN_TOKEN`` and is compared in constant
time. A user's API key is stored only as its SHA-256; the hash is looked up in
one Redis round trip and remembered briefly, so a hot client costs no lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from predmarket.api.errors import ApiError, forbidden, unauthenticated
from predmarket.engine.connection import unavailable_on_disconnect
from predmarket.engine.market_engine import MarketEngine

KEY_CACHE_SIZE = 10_000
KEY_CACHE_TTL_S = 30.0
UNKNOWN_KEY_TTL_S = 2.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the admin, or one user."""

    user_id: str | None  # None for the admin

    @property
    def is_admin(self) -> bool:
        return self.user_id is None


ADMIN = Principal(None)


def new_api_key() -> tuple[str, str]:
    """A fresh API key and the hash stored in its place."""
    key = "pmk_" + secrets.token_urlsafe(32)
    return key, hash_key(key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Authenticator:
    def __init__(self, engine: MarketEngine, admin_token: str, rate_per_s: float) -> None:
        self._engine = engine
        self._admin = admin_token.encode()
        self._rate = rate_per_s
        self._cache: OrderedDict[str, tuple[str | None, float]] = OrderedDict()
        self._limit = engine.scripts.rate_limit

    async def principal(self, request: Request) -> Principal:
        """The caller named by the Authorization header; 401 if absent or unknown."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthenticated()
        if hmac.compare_digest(token.encode(), self._admin):
            return ADMIN
        user_id = await self._user_for(hash_key(token))
        if user_id is None:
            raise unauthenticated()
        await self._rate_limit(user_id)
        return Principal(user_id)

    async def _user_for(self, key_hash: str) -> str | None:
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached and cached[1] > now:
            return cached[0]
        user_id = await self._engine.accounts.user_for_key(key_hash)
        # Unknown keys are remembered briefly too: each miss may cost a PostgreSQL lookup
        # (the user may have been evicted), and a flood of bad tokens must not become one.
        self._cache[key_hash] = (user_id, now + (KEY_CACHE_TTL_S if user_id else UNKNOWN_KEY_TTL_S))
        self._cache.move_to_end(key_hash)
        while len(self._cache) > KEY_CACHE_SIZE:
            self._cache.popitem(last=False)
        return user_id

    async def _rate_limit(self, user_id: str) -> None:
        if self._rate <= 0:
            return
        with unavailable_on_disconnect():
            allowed, retry_ms = await self._limit([self._engine.keys.rate_bucket(user_id)],
                                                  [self._rate, 2 * self._rate])
        if not int(allowed):
            retry_s = max(1, math.ceil(int(retry_ms) / 1000))
            raise ApiError(429, "RATE_LIMITED", f"more than {self._rate:g} requests per second",
                           {"Retry-After": str(retry_s)})


def _auth(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.auth
    return authenticator


#: Documents the bearer scheme on every route that authenticates (the Authorize button);
#: the header is checked by ``Authenticator.principal``, so this parses nothing that decides.
BEARER_SCHEME = HTTPBearer(auto_error=False, description="The admin token (PM_ADMIN_TOKEN) or a user's API key")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER_SCHEME)]


async def any_caller(request: Request, _: Bearer = None) -> Principal:
    """Admin or any user."""
    return await _auth(request).principal(request)


async def admin_only(request: Request, _: Bearer = None) -> Principal:
    principal = await _auth(request).principal(request)
    if not principal.is_admin:
        raise forbidden("this route is for the admin")
    return principal


async def user_only(request: Request, _: Bearer = None) -> Principal:
    principal = await _auth(request).principal(request)
    if principal.is_admin:
        raise forbidden("the admin token is not a user; use a user's API key")
    return principal


def require_self_or_admin(principal: Principal, user_id: str) -> None:
    if not principal.is_admin and principal.user_id != user_id:
        raise forbidden("a user may only read its own account")


#: Route parameters naming who may call: the admin, one user, or either.
Admin = Annotated[Principal, Depends(admin_only)]
User = Annotated[Principal, Depends(user_only)]
Caller = Annotated[Principal, Depends(any_caller)]
