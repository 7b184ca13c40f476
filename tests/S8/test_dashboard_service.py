"""The S7 dashboard's Service view against a stand-in control API on 127.0.0.1 (real HTTP, the
token checked): the state is shown, and pause / panic go out only after their confirmation."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path

import pytest
from aiohttp import web

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "S7" / "dashboard.py")
TOKEN = "dash-token-" + "d" * 24
STATUS = {
    "service": {"uptime_s": 12.0, "offline": True},
    "workers": [{"name": "streamer-1m", "kind": "streamer", "pid": 11, "state": "running", "restarts": 0,
                 "heartbeat_age_s": 0.2, "last_exit": None},
                {"name": "executor-btcusdt_1m", "kind": "executor", "pid": 12, "state": "running", "restarts": 2,
                 "heartbeat_age_s": 0.5, "last_exit": "killed by SIGKILL"}],
    "markets": [{"market": "BTCUSDT", "interval": "1m", "mode": "testnet", "last_closed_candle": "2026-01-01T00:01:00Z",
                 "lag_s": 0.4, "position": {"qty": 0.5}, "open_orders": 0, "equity": 10000.0, "paused": False,
                 "kill_switch": {"tripped": True, "reason": "panic"}}],
}


class StubApi:
    def __init__(self):
        self.posts: list[tuple[str, object]] = []

    def start(self):
        ready = threading.Event()

        async def guard(request):
            return request.headers.get("Authorization") == f"Bearer {TOKEN}"

        async def status(request):
            if not await guard(request):
                return web.json_response({"detail": "no"}, status=401)
            return web.json_response(STATUS)

        async def post(request):
            if not await guard(request):
                return web.json_response({"detail": "no"}, status=401)
            body = await request.text()
            self.posts.append((request.path, json.loads(body) if body else None))
            return web.json_response({"ok": request.path})

        def serve():
            self.loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_get("/status", status)
            for p in ("/pause", "/resume", "/panic"):
                app.router.add_post(p, post)
            self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.runner.cleanup())

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        return self

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def api(settings_env, monkeypatch):
    from S1.settings import get_settings

    stub = StubApi().start()
    monkeypatch.setenv("CONTROL_API_TOKEN", TOKEN)
    monkeypatch.setenv("CONTROL_API_PORT", str(stub.port))
    get_settings.cache_clear()
    yield stub
    stub.stop()
    get_settings.cache_clear()


def _app(monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["dashboard.py"])
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    return at


def test_the_service_view_shows_the_state_and_confirms_before_acting(api, monkeypatch):
    at = _app(monkeypatch)
    assert not at.exception, [e.value for e in at.exception]
    assert "Service" in [h.value for h in at.header]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Workers running"] == "2 of 2" and metrics["Restarts"] == "2"
    assert metrics["Kill-switches tripped"] == "1"
    # pause one market: the button is disabled until the box is ticked
    at.radio(key="svc-action").set_value("pause").run()
    at.selectbox(key="svc-market").set_value("BTCUSDT").run()
    assert at.button(key="svc-send").disabled
    at.checkbox(key="svc-confirm").check().run()
    at.button(key="svc-send").click().run()
    assert api.posts == [("/pause", {"market": "BTCUSDT"})]
    # panic: only after typing PANIC
    at.radio(key="svc-action").set_value("panic").run()
    at.text_input(key="svc-confirm-text").input("panic").run()
    assert at.button(key="svc-send").disabled
    at.text_input(key="svc-confirm-text").input("PANIC").run()
    at.button(key="svc-send").click().run()
    assert api.posts[-1] == ("/panic", None) and len(api.posts) == 2


def test_a_wrong_token_or_no_service_is_one_caption(api, monkeypatch, settings_env):
    from S1.settings import get_settings
    from S7.dashboard_service import fetch_status

    monkeypatch.setenv("CONTROL_API_TOKEN", "w" * 30)
    get_settings.cache_clear()
    status, why = fetch_status(get_settings())
    assert status is None and "401" in why
    at = _app(monkeypatch)
    assert not at.exception
    assert "Service" not in [h.value for h in at.header]
    assert any("refused CONTROL_API_TOKEN" in c.value for c in at.sidebar.caption)
