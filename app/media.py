"""Gift artwork: the default gifts' pictures shipped in the package (``app/static/gifts``),
brand plugins' pictures shipped in theirs, and the absolute URLs the API gives for them.

A gift's ``image_url`` is stored either as an absolute http(s) URL (an admin's, or a
plugin's hosted elsewhere) or as a path on this server (``/static/gifts/rose.svg``,
``/static/brands/<sku>.svg``); the API answers the latter absolute, from
``LIVEGIFTS_PUBLIC_BASE_URL``, so the pictures load offline and behind any host name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

GIFT_ART = Path(__file__).parent / "static" / "gifts"
BUILT_IN = "/static/gifts/"
BRAND_ART = "/static/brands/"
MEDIA_TYPES = {".svg": "image/svg+xml", ".png": "image/png", ".webp": "image/webp"}
CACHE_CONTROL = "public, max-age=86400"  # pictures change only with a release
# A picture opened on its own runs nothing (an SVG may hold script) and cannot be sniffed.
PICTURE_HEADERS = {"cache-control": CACHE_CONTROL,
                   "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                              "sandbox",
                   "x-content-type-options": "nosniff"}


def built_in_pictures() -> dict[str, bytes]:
    """The default gifts' pictures, by file name, read once."""
    return {path.name: path.read_bytes() for path in sorted(GIFT_ART.iterdir())
            if path.suffix in MEDIA_TYPES}


def built_in_image(sku: str) -> str:
    """Where a default gift's picture is served."""
    return f"{BUILT_IN}{sku}.svg"


def brand_image(sku: str, file: Any) -> str:
    """Where a sponsored gift's picture from its plugin's package is served."""
    return f"{BRAND_ART}{sku}{suffix(file)}"


def suffix(file: Any) -> str:
    """The picture file's kind (``.svg``, ``.png`` or ``.webp``); ValueError otherwise."""
    kind = Path(str(getattr(file, "name", file))).suffix.lower()
    if kind not in MEDIA_TYPES:
        raise ValueError(f"image_file {file!s} is not an .svg, .png or .webp picture")
    return kind


def picture_file(file: Any) -> Any:
    """A plugin's ``image_file`` as something to read: a path, or a package resource."""
    return Path(file) if isinstance(file, (str, os.PathLike)) else file


def absolute(base_url: str, url: str) -> str:
    """``url`` as a client can load it: paths on this server under ``base_url``."""
    return base_url.rstrip("/") + url if url.startswith("/") else url
