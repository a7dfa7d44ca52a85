"""Accounts: create users, read accounts, deposits and withdrawals."""

from __future__ import annotations

from fastapi import APIRouter, Request
from predmarket.api import schemas
from predmarket.api.auth import Admin, Caller, User, new_api_key, require_self_or_admin
from predmarket.api.requests import AmountBody, AmountJson, CreateUser, CreateUserBody, body_doc
from predmarket.api.responses import JSONResponse, account_json
from predmarket.api.routes.common import ERRORS, path_id
from predmarket.api.state import engine_of
from starlette.responses import Response

router = APIRouter(prefix="/v1", tags=["accounts"], responses=ERRORS)


@router.post("/users", status_code=201, openapi_extra=body_doc(CreateUser), response_model=schemas.CreatedUser,
             summary="Create a user (admin); the response shows its API key once")
async def create_user(
    request: Request, _: Admin, body: CreateUserBody) -> Response:
    key, key_hash = new_api_key()
    account = await engine_of(request).accounts.create(body.username, body.user_id, key_hash, key[-4:])
    return JSONResponse(schemas.CreatedUser(**account_json(account), api_key=key), status_code=201)


@router.get("/users/{user_id}", response_model=schemas.Account, summary="An account (the admin or that user)")
async def get_user(request: Request, user_id: str, principal: Caller) -> Response:
    require_self_or_admin(principal, user_id)
    account = await engine_of(request).accounts.get(path_id(user_id, "user"))
    return JSONResponse(account_json(account))


@router.get("/me", response_model=schemas.Account, summary="The calling user's account")
async def me(request: Request, principal: User) -> Response:
    assert principal.user_id is not None
    return JSONResponse(account_json(await engine_of(request).accounts.get(principal.user_id)))


@router.post("/users/{user_id}/deposits", status_code=201, openapi_extra=body_doc(AmountBody),
             response_model=schemas.Account,
             summary="Credit money to an account (admin)")
async def deposit(
    request: Request, user_id: str, _: Admin, body: AmountJson) -> Response:
    account = await engine_of(request).accounts.deposit(path_id(user_id, "user"), body.amount)
    return JSONResponse(account_json(account), status_code=201)


@router.post("/users/{user_id}/withdrawals", status_code=201, openapi_extra=body_doc(AmountBody),
             response_model=schemas.Account,
             summary="Pay money out of an account (admin)")
async def withdraw(
    request: Request, user_id: str, _: Admin, body: AmountJson) -> Response:
    account = await engine_of(request).accounts.withdraw(path_id(user_id, "user"), body.amount)
    return JSONResponse(account_json(account), status_code=201)
