"""Webhook alerts against a local aiohttp receiver: payload shapes, retry, timeout,
rate limit, redaction of secrets (canaries), never raising."""

from __future__ import annotations

import asyncio
import json

import pandas as pd
import pytest

from S6.alerts import (
    AlertEvent,
    NullAlerter,
    WebhookAlerter,
    error_event,
    kill_switch_event,
    order_rejected_event,
    trip_alert_hook,
)
from S6.config import AlertConfig, KillSwitchConfig
from S6.killswitch import KillSwitch, Trip

FAST = AlertConfig(timeout_s=1.0, max_retries=2, max_per_minute=50, backoff_initial_s=0.01, backoff_max_s=0.05)
HOLD = 3600.0  # an answer the receiver holds back until it stops (see conftest)
EVENT = AlertEvent("error", "feed stalled", "no candle for 5 minutes", "warning", {"symbol": "BTCUSDT"})


def test_generic_payload_delivered(receiver, settings_env):
    d = WebhookAlerter(receiver.url, config=FAST).send(EVENT)
    assert d.status == "sent" and d.attempts == 1 and d.http_status == 200
    (got,) = receiver.received
    assert got.headers["Content-Type"].startswith("application/json")
    body = got.json
    assert body["event"] == "error" and body["title"] == "feed stalled" and body["level"] == "warning"
    assert body["fields"] == {"symbol": "BTCUSDT"} and body["source"] == "binance-research-toolkit"
    assert pd.Timestamp(body["time"]).tzinfo is not None


@pytest.mark.parametrize("kind, key", [("discord", "content"), ("slack", "text")])
def test_discord_and_slack_shapes(receiver, settings_env, kind, key):
    long_event = AlertEvent("error", "boom", "x" * 5000)
    a = WebhookAlerter(receiver.url, kind=kind, config=FAST)
    assert a.send(EVENT).status == "sent" and a.send(long_event).status == "sent"
    first, second = (r.json for r in receiver.received)
    assert list(first) == [key] and "[WARNING] feed stalled: no candle for 5 minutes" in first[key]
    assert len(second[key]) <= {"discord": 2000, "slack": 3000}[kind]


def test_retry_after_500_then_success(receiver, settings_env):
    receiver.answer(500, 503)
    d = WebhookAlerter(receiver.url, config=FAST).send(EVENT)
    assert d.status == "sent" and d.attempts == 3 and len(receiver.received) == 3
    assert receiver.received[0].body == receiver.received[2].body      # the same alert, re-sent


def test_retries_are_bounded_and_never_raise(receiver, settings_env, caplog):
    receiver.answer(*[500] * 10)
    with caplog.at_level("ERROR", logger="S6.alerts"):
        d = WebhookAlerter(receiver.url, config=FAST).send(EVENT)
    assert d.status == "failed" and d.attempts == 3 and d.http_status == 500
    assert len(receiver.received) == 3                                    # 1 + max_retries, no more
    assert "not delivered after 3 attempt(s)" in caplog.text


def test_client_errors_are_not_retried(receiver, settings_env):
    receiver.answer(404)
    d = WebhookAlerter(receiver.url, config=FAST).send(EVENT)
    assert d.status == "failed" and d.attempts == 1 and len(receiver.received) == 1


def test_429_honours_retry_after(receiver, settings_env):
    cfg = FAST.model_copy(update={"backoff_max_s": 1.0})
    receiver.answer((429, 0.0, {"Retry-After": "0.3"}))
    d = WebhookAlerter(receiver.url, config=cfg).send(EVENT)
    assert d.status == "sent" and d.attempts == 2
    assert receiver.received[1].t - receiver.received[0].t >= 0.29


def test_slow_receiver_times_out_then_retry_succeeds(receiver, settings_env):
    receiver.answer((200, HOLD, {}))                                      # the first answer never comes
    d = WebhookAlerter(receiver.url, config=FAST).send(EVENT)
    assert d.status == "sent" and d.attempts == 2
    first, retry = receiver.received
    assert first.answered is None and retry.answered is not None          # did not wait for the held answer
    assert first.t < retry.t


def test_always_slow_receiver_fails_within_the_bound(receiver, settings_env):
    cfg = FAST.model_copy(update={"timeout_s": 0.2, "max_retries": 1})
    receiver.answer((200, HOLD, {}), (200, HOLD, {}))
    d = WebhookAlerter(receiver.url, config=cfg).send(EVENT)
    assert d.status == "failed" and "timeout" in d.error
    assert d.attempts == 2 and len(receiver.received) == 2                # 1 + max_retries attempts, then gave up
    assert all(r.answered is None for r in receiver.received)             # ... without waiting for any answer


def test_unreachable_webhook(settings_env):
    import socket

    with socket.socket() as s:                                            # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = WebhookAlerter(f"http://127.0.0.1:{port}/hook", config=FAST).send(EVENT)
    assert d.status == "failed" and d.attempts == 3


def test_rate_limit_drops_excess_and_reports_it(receiver, settings_env, caplog):
    now = [1000.0]
    a = WebhookAlerter(receiver.url, config=FAST.model_copy(update={"max_per_minute": 3}), clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="S6.alerts"):
        results = [a.send(AlertEvent("error", f"e{i}", "m")).status for i in range(5)]
    assert results == ["sent"] * 3 + ["dropped"] * 2
    assert len(receiver.received) == 3 and caplog.text.count("rate limit") == 2
    now[0] += 59.0
    assert a.send(EVENT).status == "dropped"                              # still inside the window
    now[0] += 1.5                                                         # window over
    assert a.send(EVENT).status == "sent"
    last = receiver.received[-1].json
    assert last["suppressed"] == 3 and "+3 alerts suppressed" in last["message"]
    assert a.stats == {"sent": 4, "dropped": 3}


CANARIES = {
    "BINANCE_API_SECRET": "canary-binance-secret-7f3a9",
    "BINANCE_TESTNET_API_KEY": "canary-testnet-key-c0ffee",
    "OPENAI_API_KEY": "sk-canary-openai-123456",
}


def test_payloads_never_contain_secrets(receiver, settings_env, monkeypatch, caplog):
    from S1.settings import get_settings

    for k, v in CANARIES.items():
        monkeypatch.setenv(k, v)
    hook_url = receiver.url + "/canary-webhook-token-998877"
    monkeypatch.setenv("ALERT_WEBHOOK_URL", hook_url)
    monkeypatch.setenv("ALERT_WEBHOOK_KIND", "generic")
    get_settings.cache_clear()
    a = WebhookAlerter.from_settings(config=FAST)
    assert isinstance(a, WebhookAlerter)
    leak = (f"signature failed for {CANARIES['BINANCE_API_SECRET']} with key {CANARIES['BINANCE_TESTNET_API_KEY']}; "
            f"openai={CANARIES['OPENAI_API_KEY']} posting to {hook_url}; "
            "GET /api/v3/order?symbol=BTCUSDT&signature=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 "
            "apiKey=unlisted-key-AbCdEf123456")
    events = [error_event("executor", RuntimeError(leak)),
              order_rejected_event(symbol="BTCUSDT", side="BUY", qty="0.1", price="43000", reason=leak),
              AlertEvent("info", "t", "m", fields={"detail": leak, "nested": [leak, {"k": leak}]})]
    for kind in ("generic", "discord", "slack"):
        a.kind = kind
        for ev in events:
            assert a.send(ev).status == "sent"
    assert len(receiver.received) == 9
    assert all(r.path == "/hook/canary-webhook-token-998877" for r in receiver.received)  # it did use the URL
    for r in receiver.received:
        text = r.body.decode()
        for canary in [*CANARIES.values(), "canary-webhook-token-998877", "9f86d081884c7d65",
                       "unlisted-key-AbCdEf123456"]:
            assert canary not in text
        assert "***" in text
    # failure logs do not leak the webhook URL either
    receiver.answer(500, 500, 500)
    with caplog.at_level("DEBUG"):
        a.send(events[0])
    assert "canary-webhook-token-998877" not in caplog.text


def test_send_inside_a_running_loop_schedules(receiver, settings_env):
    a = WebhookAlerter(receiver.url, config=FAST)

    async def trading_loop():
        d = a.send(EVENT)                                                  # must not block the loop
        assert d.status == "scheduled"
        direct = await a.asend(EVENT)
        await asyncio.gather(*a._tasks)
        return direct

    assert asyncio.run(trading_loop()).status == "sent"
    assert len(receiver.received) == 2


def test_null_alerter_and_bad_settings(settings_env):
    assert isinstance(WebhookAlerter.from_settings(), NullAlerter)
    assert NullAlerter().send(EVENT).status == "disabled"
    from S1.errors import UserError

    with pytest.raises(UserError, match="ALERT_WEBHOOK_KIND"):
        WebhookAlerter("http://127.0.0.1:1/x", kind="teams")
    with pytest.raises(UserError, match="http"):
        WebhookAlerter("ftp://example/x")


def test_kill_switch_trip_sends_an_alert(receiver, settings_env, tmp_path):
    a = WebhookAlerter(receiver.url, kind="discord", config=FAST)
    ks = KillSwitch(KillSwitchConfig(max_drawdown=0.1), path=tmp_path / "ks.json",
                    on_trip=trip_alert_hook(a, symbol="BTCUSDT"))
    ks.update_equity(1000, at="2024-01-01")
    ks.update_equity(899, at="2024-01-01 01:00")
    (got,) = receiver.received
    text = got.json["content"]
    assert "kill-switch tripped (max_drawdown)" in text and "python S6/risk.py reset" in text


def test_alert_failure_does_not_break_the_kill_switch(settings_env, tmp_path):
    def broken(trip):
        raise RuntimeError("webhook exploded")

    ks = KillSwitch(KillSwitchConfig(max_drawdown=0.1), path=tmp_path / "ks.json", on_trip=broken)
    ks.update_equity(1000, at="2024-01-01")
    assert not ks.update_equity(800, at="2024-01-01 01:00")
    assert not KillSwitch(path=tmp_path / "ks.json").allows_entries()


def test_event_helpers():
    trip = Trip("daily_loss", "loss 5.00% ...", pd.Timestamp("2024-01-01", tz="UTC"),
                pd.Timestamp("2024-01-02", tz="UTC"))
    ev = kill_switch_event(trip, symbol="ETHUSDC")
    assert ev.level == "critical" and "resumes at 2024-01-02" in ev.message and ev.fields["symbol"] == "ETHUSDC"
    assert json.dumps(WebhookAlerter("http://127.0.0.1:1/x").payload(ev))    # serialisable
