"""Run an aiohttp application on 127.0.0.1 in a background thread.

The local test servers of every sprint (the Binance market-data and order
exchange, the WebSocket streams, the OpenAI-compatible chat server, the news
feeds) share this one piece of plumbing: a daemon thread with its own event
loop, a free port chosen by the OS, a clean stop, and use as a context manager.
"""

from __future__ import annotations

import asyncio
import threading
import time

from aiohttp import web


class LocalServer:
    """Base class: subclasses set ``self.app``, ``self.host`` and ``self.port`` (0 = any free port)."""

    thread_name = "local-server"
    app: web.Application
    host: str = "127.0.0.1"
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self):
        """Start serving; returns ``self`` once the port is bound (raises what binding raised)."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def serve():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
            try:
                self._loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, self.host, self.port)
                self._loop.run_until_complete(site.start())
                self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            except BaseException as exc:  # reported to the caller of start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(runner.cleanup())
            pending = asyncio.all_tasks(self._loop)  # e.g. slow handlers still sleeping
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

        self._thread = threading.Thread(target=serve, name=self.thread_name, daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)

    def serve_until_interrupted(self) -> None:
        """Block until Ctrl-C, then stop (for the ``python -m ...`` entry points)."""
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            self.stop()

    def call_soon(self, fn, *args) -> None:
        """Run ``fn`` on the server's event loop (for routes added by other modules)."""
        assert self._loop is not None, "start() the server first"
        self._loop.call_soon_threadsafe(fn, *args)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
