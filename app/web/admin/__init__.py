"""``/admin``: the admin API (``/admin/api``, bearer token) and the dashboard (session cookie).

Both exist only when ``HOOKLINE_ADMIN_TOKEN`` is set; without it no /admin route is mounted and every
/admin path answers 404, exactly like a path that never existed.
"""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from app.core.settings import Settings
from app.web.admin import api, dashboard

STATIC = Path(__file__).resolve().parent / "static"


def routes(settings: Settings) -> list[BaseRoute]:
    """The /admin routes, or none when admin is off."""
    if settings.admin_token is None or not settings.admin_token.get_secret_value():
        return []
    return [
        Route("/admin", dashboard.overview, methods=["GET"]),
        Mount(
            "/admin",
            routes=[
                Mount("/api", routes=api.routes()),
                Mount("/static", app=StaticFiles(directory=STATIC), name="admin-static"),
                *dashboard.routes(),
            ],
        ),
    ]
