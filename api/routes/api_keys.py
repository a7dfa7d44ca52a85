"""API keys: a user makes more keys, lists and revokes them; the admin does the same for any user."""

from __future__ import annotations

from fastapi import APIRouter, Request
from predmarket.api import schemas
from predmarket.api.auth import Admin, User, new_api_key
from predmarket.api.responses import JSONResponse, rfc3339
from predmarket.api.routes.common import ERRORS, path_id
from predmarket.api.state import engine_of
from predmarket.engine.api_keys import ApiKey
from starlette.responses import Response

router = APIRouter(prefix="/v1", tags=["api keys"], responses=ERRORS)


def key_json(key: ApiKey) -> schemas.ApiKey:
    return {"key_id": key.key_id, "created_at": rfc3339(key.created_ms),
            "last_used_at": rfc3339(key.last_used_ms) if key.last_used_ms else None, "last4": key.last4}


async def _create(request: Request, user_id: str) -> Response:
    key, key_hash = new_api_key()
    made = await engine_of(request).accounts.api_keys.create(user_id, key_hash, key[-4:])
    return JSONResponse(schemas.CreatedApiKey(key_id=made.key_id, api_key=key, created_at=rfc3339(made.created_ms)),
                        status_code=201)


async def _list(request: Request, user_id: str) -> Response:
    keys = await engine_of(request).accounts.api_keys.of_user(user_id)
    return JSONResponse(schemas.ApiKeyList(api_keys=[key_json(k) for k in keys]))


async def _revoke(request: Request, user_id: str, key_id: str) -> Response:
    await engine_of(request).accounts.api_keys.revoke(user_id, path_id(key_id, "API key"))
    return Response(status_code=204)


def _own(principal: User) -> str:
    assert principal.user_id is not None
    return principal.user_id


@router.post("/me/api-keys", status_code=201, response_model=schemas.CreatedApiKey,
             summary="Make another API key for the caller; the response shows it once")
async def create_my_key(request: Request, principal: User) -> Response:
    return await _create(request, _own(principal))


@router.get("/me/api-keys", response_model=schemas.ApiKeyList, summary="The caller's live API keys")
async def my_keys(request: Request, principal: User) -> Response:
    return await _list(request, _own(principal))


@router.delete("/me/api-keys/{key_id}", status_code=204, response_class=Response,
               summary="Revoke one of the caller's keys: refused on every replica from the next request")
async def revoke_my_key(request: Request, key_id: str, principal: User) -> Response:
    return await _revoke(request, _own(principal), key_id)


@router.post("/users/{user_id}/api-keys", status_code=201, response_model=schemas.CreatedApiKey,
             summary="Make another API key for a user (admin); the response shows it once")
async def create_key(request: Request, user_id: str, _: Admin) -> Response:
    return await _create(request, path_id(user_id, "user"))


@router.get("/users/{user_id}/api-keys", response_model=schemas.ApiKeyList,
            summary="A user's live API keys (admin)")
async def user_keys(request: Request, user_id: str, _: Admin) -> Response:
    return await _list(request, path_id(user_id, "user"))


@router.delete("/users/{user_id}/api-keys/{key_id}", status_code=204, response_class=Response,
               summary="Revoke a user's key (admin): refused on every replica from the next request")
async def revoke_key(request: Request, user_id: str, key_id: str, _: Admin) -> Response:
    return await _revoke(request, path_id(user_id, "user"), key_id)
