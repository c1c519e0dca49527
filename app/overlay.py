"""The live overlay: a page for broadcasting software (an OBS browser source) showing one live
session's gifts, combos, viewers and top gifters as they happen.

This module owns the overlay's routes and URL. ``/overlay/<session id>`` serves the page and
``/static/overlay/`` its files from the package (``app/static/overlay``: html, css, the script,
and the vendored graphql-ws browser client; no CDN). The viewer token travels in the URL
fragment (``#token=...``), which browsers never send, so it stays out of server and proxy logs;
the script passes it in the ``connection_init`` payload of ``liveSessionEvents`` and in the
``Authorization`` header of its one query.

On first load the page reads ``liveSession(id) { topGifters runningCombos }`` (combos that
started before the page opened get their cards), then follows ``liveSessionEvents``. Every
event carries its cursor; after a dropped connection or a server restart the page resumes
after the last event it showed (``after:``), so it misses nothing and shows nothing twice;
should it have been offline longer than the server keeps events, it starts again from now.
The server emits ``TopGiftersChanged`` after a gift that puts its sender in the top three,
ranked from committed totals, so the page never adds coins up itself.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from litestar import Response, get
from litestar.enums import MediaType
from litestar.params import FromPath
from litestar.static_files import create_static_files_router

STATIC_DIRECTORY = Path(__file__).parent / "static" / "overlay"
_PAGE = (STATIC_DIRECTORY / "index.html").read_bytes()
# The page runs only its own files and talks only to this server.
_CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
    "img-src 'self' https: http:", "base-uri 'none'", "form-action 'none'"])


def overlay_url(base_url: str, session_id: str, token: str) -> str:
    """The URL to paste into broadcasting software: the token rides in the fragment."""
    return f"{base_url.rstrip('/')}/overlay/{quote(session_id, safe='=')}#token={token}"


@get("/overlay/{session_id:str}", sync_to_thread=False, include_in_schema=False)
def overlay_page(session_id: FromPath[str]) -> Response[bytes]:
    """The overlay page; its script reads the session id from its own URL."""
    return Response(_PAGE, media_type=MediaType.HTML,
                    headers={"content-security-policy": _CONTENT_SECURITY_POLICY,
                             "referrer-policy": "no-referrer",
                             "x-content-type-options": "nosniff"})


OVERLAY_ROUTES = [
    overlay_page,
    create_static_files_router(path="/static/overlay", directories=[STATIC_DIRECTORY],
                               name="overlay-static"),
]
