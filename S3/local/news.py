"""A local news server on 127.0.0.1 (aiohttp.web in a thread) for tests and offline
runs: RSS/Atom feeds, the CryptoPanic posts API and X API v2 recent search, with
fault injection.

- ``GET /feeds/{name}``: a registered document (:meth:`LocalNews.add_feed`) with its
  status and content type -- a real feed capture, a malformed one, a 500 page;
- ``GET /cryptopanic/posts/``: pages of posts (``auth_token`` checked, ``page``,
  ``next``) -- set ``CRYPTOPANIC_URL`` to ``server.url + "/cryptopanic"``;
- ``GET /x/tweets/search/recent``: tweets (``Authorization: Bearer`` checked,
  ``next_token`` paging) -- set ``X_API_URL`` to ``server.url + "/x"``;
- :meth:`LocalNews.inject` queues ``status`` (e.g. 500/503), ``429`` (with
  ``Retry-After``), ``drop`` (connection closed) or ``delay`` for requests whose path
  contains a given string.
"""

from __future__ import annotations

import asyncio
import threading
import time

from aiohttp import web

from S1.local.faults import Fault, FaultQueue
from S1.local.server import LocalServer


class LocalNews(LocalServer):
    def __init__(self, *, cryptopanic_token: str = "cp-token", x_token: str = "x-token",
                 host: str = "127.0.0.1", port: int = 0):
        self.host, self.port = host, port
        self.cryptopanic_token, self.x_token = cryptopanic_token, x_token
        self.feeds: dict[str, tuple[int, bytes, str]] = {}
        self.cryptopanic_pages: list[list[dict]] = []
        self.x_pages: list[list[dict]] = []
        self.faults = FaultQueue()
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self.app = web.Application(middlewares=[self._middleware])
        self.app.router.add_get("/feeds/{name}", self._feed)
        self.app.router.add_get("/cryptopanic/posts/", self._cryptopanic)
        self.app.router.add_get("/x/tweets/search/recent", self._x)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    thread_name = "local-news"

    def feed_url(self, name: str) -> str:
        return f"{self.url}/feeds/{name}"

    def add_feed(self, name: str, body: bytes | str, *, status: int = 200,
                 content_type: str = "application/rss+xml") -> str:
        self.feeds[name] = (status, body.encode() if isinstance(body, str) else body, content_type)
        return self.feed_url(name)

    def inject(self, kind: str, *, path: str, count: int = 1, **kw) -> Fault:
        """Queue a fault (``"status"``, ``"429"``, ``"drop"``, ``"delay"``) for requests whose path contains ``path``."""
        return self.faults.add(Fault(kind=kind, path=path, count=count, **kw))

    def requests_to(self, fragment: str) -> list[dict]:
        return [r for r in self.requests if fragment in r["path"]]

    # ------------------------------------------------------------------ server
    def _take_fault(self, path: str) -> Fault | None:
        return self.faults.take(path)

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        fault = self._take_fault(request.path)
        with self._lock:
            self.requests.append({"path": request.path, "query": dict(request.query),
                                  "headers": dict(request.headers), "t": time.monotonic(),
                                  "fault": fault.kind if fault else None})
        if fault is not None:
            if fault.kind == "status":
                return web.Response(status=fault.status, text="<html><body>Internal Server Error</body></html>",
                                    content_type="text/html")
            if fault.kind == "429":
                return web.json_response({"status": "Too Many Requests"}, status=429,
                                         headers={"Retry-After": f"{fault.retry_after:g}"})
            if fault.kind == "drop":
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError()
            if fault.kind == "delay":
                await asyncio.sleep(fault.delay)
        return await handler(request)

    async def _feed(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.feeds:
            return web.Response(status=404, text="not found")
        status, body, ctype = self.feeds[name]
        return web.Response(status=status, body=body, content_type=ctype.split(";")[0])

    async def _cryptopanic(self, request: web.Request) -> web.Response:
        if request.query.get("auth_token") != self.cryptopanic_token:
            return web.json_response({"status": "Incomplete", "info": "Token not found"}, status=401)
        page = int(request.query.get("page", "1"))
        results = self.cryptopanic_pages[page - 1] if 0 < page <= len(self.cryptopanic_pages) else []
        nxt = f"{self.url}/cryptopanic/posts/?page={page + 1}" if page < len(self.cryptopanic_pages) else None
        return web.json_response({"count": sum(len(p) for p in self.cryptopanic_pages), "next": nxt,
                                  "previous": None, "results": results})

    async def _x(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.x_token}":
            return web.json_response({"title": "Unauthorized", "type": "about:blank", "status": 401,
                                      "detail": "Unauthorized"}, status=401)
        token = request.query.get("next_token")
        page = int(token[1:]) if token and token.startswith("p") else 0
        data = self.x_pages[page] if page < len(self.x_pages) else []
        meta = {"result_count": len(data)}
        if data:
            meta.update(newest_id=data[0]["id"], oldest_id=data[-1]["id"])
        if page + 1 < len(self.x_pages):
            meta["next_token"] = f"p{page + 1}"
        body = {"data": data, "meta": meta} if data else {"meta": meta}
        return web.json_response(body)
