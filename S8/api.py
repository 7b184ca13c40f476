"""The control API (FastAPI): status, pause/resume, panic, reload, stop -- and ``/metrics``.

Every endpoint but ``/metrics`` needs ``Authorization: Bearer <CONTROL_API_TOKEN>`` (compared in
constant time with :func:`hmac.compare_digest`); the OpenAPI page is at ``/docs`` (its JSON at
``/openapi.json``; both need the token too, like everything that is not ``/metrics``). Bound to
``CONTROL_API_HOST`` (127.0.0.1 by default) and ``CONTROL_API_PORT`` (8008).
"""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from S1.errors import UserError

if TYPE_CHECKING:
    from S8.runtime import Service

MIN_TOKEN_LENGTH = 24
TOKEN_HINT = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


def check_token(token: str | None) -> str:
    """The token, or a :class:`UserError` that says how to make one.

    >>> check_token("x" * 24) == "x" * 24
    True
    """
    if not token or len(token) < MIN_TOKEN_LENGTH:
        raise UserError(f"CONTROL_API_TOKEN is {'missing' if not token else 'shorter than 24 characters'}: the "
                        "control API (which can stop trading and close positions) would be open",
                        f"make one with `{TOKEN_HINT}` and put CONTROL_API_TOKEN=<it> in .env")
    return token


def new_token() -> str:
    return secrets.token_urlsafe(32)


class Target(BaseModel):
    market: str | None = None


def build_app(service: "Service", token: str) -> FastAPI:
    bearer = HTTPBearer(auto_error=False)
    expected = check_token(token).encode()

    def auth(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        given = (creds.credentials if creds is not None and creds.scheme.lower() == "bearer" else "").encode()
        if not hmac.compare_digest(given, expected):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="Binance research toolkit service", docs_url=None, redoc_url=None, openapi_url=None,
                  description="Control API of `python S8/service.py` (see S8/README.md).")
    secured = [Depends(auth)]

    @app.get("/openapi.json", dependencies=secured, include_in_schema=False)
    def openapi() -> dict:
        return app.openapi()

    @app.get("/docs", dependencies=secured, include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    @app.get("/metrics", include_in_schema=True, summary="Prometheus metrics (no token)")
    def metrics() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    @app.get("/status", dependencies=secured, summary="Workers and markets")
    def status() -> dict:
        return service.status()

    def _market(body: Target | None) -> str | None:
        return body.market if body is not None else None

    @app.post("/pause", dependencies=secured, summary="Stop new entries (exits and stops still work)")
    async def pause(body: Target | None = None) -> dict:
        try:
            return await service.pause(_market(body), paused=True)
        except KeyError:
            raise HTTPException(404, f"no market {_market(body)!r} in this service") from None

    @app.post("/resume", dependencies=secured, summary="Allow new entries again")
    async def resume(body: Target | None = None) -> dict:
        try:
            return await service.pause(_market(body), paused=False)
        except KeyError:
            raise HTTPException(404, f"no market {_market(body)!r} in this service") from None

    @app.post("/panic", dependencies=secured,
              summary="Cancel every open order, close every position at market, trip every kill-switch")
    async def panic() -> dict:
        return await service.panic()

    @app.post("/reload", dependencies=secured, summary="Re-read the rule and risk files (validated first)")
    async def reload() -> dict:
        try:
            return await service.reload()
        except UserError as exc:
            raise HTTPException(422, {"refused": exc.problem, "fix": exc.fix,
                                      "note": "the rules in force were kept"}) from None

    @app.post("/stop", dependencies=secured, summary="Clean shutdown, as on SIGTERM")
    async def stop(request: Request) -> dict:
        service.request_stop("POST /stop")
        return {"stopping": True}

    return app


__all__ = ["MIN_TOKEN_LENGTH", "TOKEN_HINT", "build_app", "check_token", "new_token"]
