"""Gift artwork over a real server: every default gift's picture, at the absolute URL the API
gives, is served by livegifts itself (the packaged file, its media type, cacheable), and a
configured public base URL (``LIVEGIFTS_PUBLIC_BASE_URL``) is the base of every URL."""

from __future__ import annotations

import httpx
import pytest

from app.media import CACHE_CONTROL, GIFT_ART, MEDIA_TYPES
from app.services.catalogue import DEFAULT_GIFTS
from tests.conftest import fresh_database
from tests.support import ServerProcess

CATALOGUE = "{ gifts(first: 100) { edges { node { sku imageUrl } } } }"
DEFAULT_SKUS = {sku for sku, *_ in DEFAULT_GIFTS}


def pictures(server: ServerProcess) -> dict[str, str]:
    """The default gifts' image URLs as the API answers them, by sku."""
    body = httpx.post(server.url, json={"query": CATALOGUE}, timeout=30).json()
    assert "errors" not in body, body
    urls = {e["node"]["sku"]: e["node"]["imageUrl"] for e in body["data"]["gifts"]["edges"]}
    assert DEFAULT_SKUS <= urls.keys(), f"default gifts missing: {DEFAULT_SKUS - urls.keys()}"
    return {sku: url for sku, url in urls.items() if sku in DEFAULT_SKUS}


def serve(request, tmp_path_factory, **environment: str) -> ServerProcess:
    process = ServerProcess(fresh_database("sqlite", request, tmp_path_factory.mktemp("art")),
                            LIVEGIFTS_SEED_DEMO_DATA="true", **environment)
    process.start()
    request.addfinalizer(process.stop)
    return process


def test_every_default_gift_picture_is_served_at_its_absolute_url(request, tmp_path_factory):
    server = serve(request, tmp_path_factory)
    base = server.url.removesuffix("/graphql")
    shipped = {path.name for path in GIFT_ART.iterdir() if path.suffix in MEDIA_TYPES}
    served = set()
    for sku, url in pictures(server).items():
        assert url.startswith(f"{base}/static/gifts/"), f"{sku}: {url}"
        answer = httpx.get(url, timeout=30)
        name = url.rsplit("/", 1)[1]
        assert answer.status_code == 200, f"{sku}: {url} answered {answer.status_code}"
        assert answer.headers["content-type"] == MEDIA_TYPES[name[name.rindex("."):]], sku
        assert answer.headers["cache-control"] == CACHE_CONTROL, sku
        assert answer.content == (GIFT_ART / name).read_bytes(), f"{sku}: not the shipped file"
        served.add(name)
    assert served == shipped, "a shipped picture belongs to no default gift, or the reverse"


@pytest.mark.parametrize("public_base", ["https://live.example.com",
                                         "https://cdn.example.com/livegifts/"])
def test_a_public_base_url_is_the_base_of_every_picture(request, tmp_path_factory,
                                                        public_base):
    """Behind a proxy or CDN at ``public_base``, whose paths map to this server's, the
    pictures' URLs are absolute on that base; the same paths are served here."""
    server = serve(request, tmp_path_factory, LIVEGIFTS_PUBLIC_BASE_URL=public_base)
    base = server.url.removesuffix("/graphql")
    for sku, url in pictures(server).items():
        assert url == f"{public_base.rstrip('/')}/static/gifts/{sku}.svg", url
        path = url.removeprefix(public_base.rstrip("/"))
        assert httpx.get(base + path, timeout=30).status_code == 200, path
