"""The browser page at `/` and its static files."""

from __future__ import annotations

import html
from importlib import resources
from pathlib import Path

from aiohttp import web

from ..auth import mint_token
from .context import SETTINGS

routes = web.RouteTableDef()

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
routes.static("/static", STATIC_DIR)


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    page = resources.files("formy_async").joinpath("static/index.html").read_text()
    settings = request.app[SETTINGS]
    if settings.page_user:  # `formy-async run` only: zero set-up for the person trying it
        token = mint_token(settings.secret_key, settings.page_user, ttl=12 * 3600)
        meta = f'<meta name="formy-token" content="{html.escape(token)}">'
        page = page.replace("</head>", f"{meta}\n</head>", 1)
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})
