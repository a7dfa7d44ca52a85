"""Ports and HTTP endpoints on the loopback interface."""

from __future__ import annotations

import httpx

from predmarket.services import free_port  # the product's own helper (the demo picks its ports with it)

__all__ = ["answers_200", "free_port"]


def answers_200(url: str, timeout_s: float = 1.0) -> bool:
    """Does a GET of ``url`` answer 200 now (nothing listening, a timeout or another status: no)?"""
    try:
        return httpx.get(url, timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False
