"""The web page at ``/``: static files from ``api/web`` (shipped in the wheel), served with cache headers.

The page's files are addressed by one version, a hash of all of them: ``/`` names
``/web/<version>/app.js`` and so on, so those answers can be cached for a year
(``immutable``) while ``/`` itself is revalidated on every load (``no-cache`` with an
``ETag``). ES modules import each other by relative paths, which stay inside the one
version. A version this replica does not hold (another release, during a rolling
deploy) is ``404``, never a file of another version under that name.

Only files of known types present at start-up are served (a lookup in a dict, never a
path joined from the URL). Every answer carries a Content-Security-Policy allowing only
the page's own scripts, styles and connections.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable

from fastapi import APIRouter, Request
from predmarket.api.routes.common import ERRORS
from predmarket.engine.errors import NotFound
from starlette.responses import HTMLResponse, Response

router = APIRouter(tags=["web page"])

#: The placeholder in index.html that becomes ``/web/<version>``.
ASSETS_PLACEHOLDER = "__ASSETS__"
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: No inline script or style, no eval, nothing from another origin (the chart draws on a canvas).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
IMMUTABLE = "public, max-age=31536000, immutable"
#: Smaller than this, gzip is not worth a second copy.
GZIP_FROM_BYTES = 1024


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    content_type: str


@dataclass(frozen=True)
class Bundle:
    version: str
    index: bytes
    assets: dict[str, Asset]


def _walk(folder: Traversable, prefix: str = "") -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            found |= _walk(entry, name + "/")
        elif entry.is_file():
            found[name] = entry.read_bytes()
    return found


@lru_cache(maxsize=1)
def bundle() -> Bundle:
    """The page's files as installed, read once per process."""
    found = _walk(files("predmarket.api").joinpath("web"))
    digest = hashlib.sha256()
    for name in sorted(found):
        digest.update(name.encode() + b"\0" + found[name] + b"\0")
    version = digest.hexdigest()[:16]
    assets = {}
    for name, body in found.items():
        content_type = CONTENT_TYPES.get(name[name.rfind("."):]) if "." in name else None
        if content_type is not None:
            packed = gzip.compress(body, mtime=0) if len(body) >= GZIP_FROM_BYTES else None
            assets[name] = Asset(body, packed, content_type)
    index = found["index.html"].decode().replace(ASSETS_PLACEHOLDER, f"/web/{version}").encode()
    return Bundle(version, index, assets)


def _accepts_gzip(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "")


@router.get("/", response_class=HTMLResponse, summary="The web page: live markets, chart, trade ticket, account",
            responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}})
async def page(request: Request) -> Response:
    web = bundle()
    etag = f'"{web.version}"'
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache", "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return HTMLResponse(web.index, headers=headers)


@router.get("/web/{version}/{name:path}", include_in_schema=False, responses={404: ERRORS[404]})
async def asset(request: Request, version: str, name: str) -> Response:
    """One file of the page (not in the API's document: a content-addressed static file)."""
    web = bundle()
    found = web.assets.get(name) if version == web.version else None
    if found is None:
        raise NotFound(f"no file {name[:80]!r} in version {version[:40]!r} of the web page")
    headers = {**SECURITY_HEADERS, "Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding"}
    if found.gzipped is not None and _accepts_gzip(request):
        return Response(found.gzipped, media_type=found.content_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(found.body, media_type=found.content_type, headers=headers)
