"""Bearer-token authentication, the authorisation rules, and the per-user rate limit.

The admin token comes from ``PM_ADMIN_TOKEN`` and is compared in constant
time. A user's API key is stored only as its SHA-256, and Redis's key directory
decides every request: with the rate limit on, one script checks that the key
still names the user and takes a token from the user's bucket (one round trip);
with it off, one HGET. So a revoked key is refused by the next request on every
replica. What a replica remembers per key (the user it named) only picks the
bucket to ask about, never the answer.

The last use of each key is remembered in memory and flushed to Redis every
``LAST_USED_FLUSH_S`` seconds (no write per request): ``last_used_at`` is exact
to that period.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from predmarket.api.errors import ApiError, forbidden, unauthenticated
from predmarket.engine.api_keys import KeyUse
from predmarket.engine.connection import UNREACHABLE, unavailable_on_disconnect
from predmarket.engine.deployment import Engine
from predmarket.engine.errors import EngineError

#: Keys whose user a replica remembers (to name the rate-limit bucket in the same round trip).
KEY_HINTS_SIZE = 10_000
#: How often a replica writes the last use of the keys it authenticated: last_used_at's precision.
LAST_USED_FLUSH_S = 5.0
log = logging.getLogger("predmarket.api")


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
    def __init__(self, engine: Engine, admin_token: str, rate_per_s: float,
                 flush_every_s: float = LAST_USED_FLUSH_S) -> None:
        self._engine = engine
        self._keys = engine.accounts.api_keys
        self._admin = admin_token.encode()
        self._rate = rate_per_s
        self._limit = engine.scripts.rate_limit
        #: key hash -> the user it named when last checked (a hint: Redis decides every request)
        self._hints: OrderedDict[str, str] = OrderedDict()
        #: key hash -> its latest use since the last flush
        self._used: dict[str, KeyUse] = {}
        self._flush_every_s = flush_every_s
        self._flusher: asyncio.Task[None] | None = None

    async def principal(self, request: Request) -> Principal:
        """The caller named by the Authorization header; 401 if absent, unknown or revoked."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthenticated()
        if hmac.compare_digest(token.encode(), self._admin):
            return ADMIN
        key_hash = hash_key(token)
        user_id = await self._user_for(key_hash)
        self._used[key_hash] = KeyUse(key_hash, user_id, int(time.time() * 1000))
        return Principal(user_id)

    async def _user_for(self, key_hash: str) -> str:
        """The user the key names now (401 if none), its rate limit taken."""
        user_id = self._hints.get(key_hash)
        if user_id is None or self._rate <= 0:
            user_id = await self._keys.owner(key_hash)
            if user_id is None:
                self._hints.pop(key_hash, None)
                raise unauthenticated()
            self._hints[key_hash] = user_id
            self._hints.move_to_end(key_hash)
            while len(self._hints) > KEY_HINTS_SIZE:
                self._hints.popitem(last=False)
            if self._rate <= 0:
                return user_id
        await self._rate_limit(key_hash, user_id)
        return user_id

    async def _rate_limit(self, key_hash: str, user_id: str) -> None:
        k = self._engine.user_keys(user_id)  # the user's home shard: its key directory and bucket
        with unavailable_on_disconnect():
            allowed, retry_ms, live = await self._limit([k.rate_bucket(user_id), k.apikeys],
                                                        [self._rate, 2 * self._rate, key_hash, user_id])
        if not int(live):  # revoked since this replica last saw it
            self._hints.pop(key_hash, None)
            raise unauthenticated()
        if not int(allowed):
            retry_s = max(1, math.ceil(int(retry_ms) / 1000))
            raise ApiError(429, "RATE_LIMITED", f"more than {self._rate:g} requests per second",
                           {"Retry-After": str(retry_s)})

    # ------------------------------------------------------------------ last use

    def start(self) -> None:
        """Flush the keys' last use every ``flush_every_s`` seconds from now on (call inside the loop)."""
        self._flusher = asyncio.create_task(self._flush_forever(), name="api-key-last-use")

    async def close(self) -> None:
        """Stop flushing; write what is pending once more (best effort: Redis may be gone)."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush_last_use()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._flush_every_s)
            await self.flush_last_use()

    async def flush_last_use(self) -> None:
        """Write the uses remembered since the last flush; on failure keep them for the next one."""
        uses, self._used = self._used, {}
        if not uses:
            return
        try:
            await self._keys.touch(uses.values())
        except (EngineError, *UNREACHABLE) as exc:
            for key_hash, use in uses.items():
                self._used.setdefault(key_hash, use)  # a newer use made meanwhile wins
            log.warning("could not record the last use of %d API keys: %s", len(uses), exc)


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
