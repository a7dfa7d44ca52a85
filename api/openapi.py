"""The published OpenAPI document: FastAPI's, plus what it cannot infer from the routes.

(The bearer scheme comes from the auth dependencies themselves: ``api.auth.BEARER_SCHEME``.)

- ``/metrics`` as Prometheus text, not JSON;
- ``/v1/ws``, which as a WebSocket route is not in FastAPI's document at all.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

WEBSOCKET = {
    "get": {
        "tags": ["events"],
        "summary": "Live events over a WebSocket (the same events and filters as GET /v1/events)",
        "description": "Upgrade with `Upgrade: websocket`. Each message is a JSON object "
        "`{\"id\", \"event\", \"data\"}`; `?market_id=` (repeatable) filters, `?after=<event id>` resumes.",
        "operationId": "events_websocket",
        "parameters": [
            {"name": "market_id", "in": "query", "required": False,
             "schema": {"type": "array", "items": {"type": "string"}}},
            {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
        ],
        "responses": {"101": {"description": "Switching Protocols: the event stream follows"}},
    }
}


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(title=app.title, version=app.version, description=app.description,
                               routes=app.routes)
        paths = document["paths"]
        metrics = paths.get("/metrics", {}).get("get")
        if metrics is not None:
            metrics["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
        paths["/v1/ws"] = WEBSOCKET
        app.openapi_schema = document
        return document

    # FastAPI's documented way to customise the document is to replace the method.
    app.openapi = openapi  # type: ignore[method-assign]
