"""Webhook alerts: kill-switch trips, order rejections, errors.

``ALERT_WEBHOOK_URL`` (a secret: Discord and Slack URLs embed a token) and
``ALERT_WEBHOOK_KIND`` (``generic`` | ``discord`` | ``slack``) come from settings;
timeouts, retries and the rate limit from the ``alerts`` section of the risk config.

- Payload shapes: generic JSON (``event``, ``level``, ``title``, ``message``,
  ``fields``, ``time``, ``source``), Discord ``{"content": ...}`` (2,000 chars max),
  Slack ``{"text": ...}``.
- Never a secret: every string goes through :func:`S1.settings.redact` (all
  configured keys, tokens and the webhook URL itself) plus patterns for
  ``signature=``/``apiKey=``-style values, before serialisation *and* again on the
  serialised body.
- Timeout per attempt; bounded retries (tenacity, exponential backoff with
  jitter) on timeouts, connection errors, 5xx and 429 (``Retry-After`` honoured up
  to the backoff cap); other 4xx are not retried.
- Rate limit: at most ``max_per_minute`` alerts in any 60 s window; the excess is
  dropped with a log line and counted, and the next alert that goes out says how
  many were suppressed.
- Delivery never raises: an alert failure is logged and reported in the
  returned :class:`Delivery`, it never stops trading code.

>>> a = WebhookAlerter("http://127.0.0.1:9/hook", kind="slack")
>>> a.payload(AlertEvent("error", "feed stalled", "no candle for 5 min"))
{'text': ':warning: [WARNING] feed stalled: no candle for 5 min'}
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

import aiohttp
import pandas as pd
from pydantic import SecretStr
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from S1.errors import UserError
from S6.config import AlertConfig

log = logging.getLogger(__name__)

KINDS = ("generic", "discord", "slack")
Level = Literal["info", "warning", "critical"]
SOURCE = "binance-research-toolkit"
_ICON = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}
_LIMITS = {"discord": 2000, "slack": 3000}
#: Secret-looking values that may hide in error texts even when not configured here.
_PATTERNS = [
    re.compile(r"(?i)(signature=)[0-9a-f]{16,}"),
    re.compile(r"(?i)((?:api[_-]?key|apikey|secret|token|password|x-mbx-apikey)[\"']?\s*[:=]\s*[\"']?)"
               r"[A-Za-z0-9_\-./+]{6,}"),
    re.compile(r"(?i)(https://(?:discord(?:app)?\.com/api/webhooks|hooks\.slack\.com/services)/)[^\s\"']+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-.=]{8,}"),
]


@dataclass(frozen=True)
class AlertEvent:
    """One alert. ``kind``: kill_switch | order_rejected | error | test | info."""

    kind: str
    title: str
    message: str
    level: Level = "warning"
    fields: Mapping[str, Any] = field(default_factory=dict)
    time: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))

    def text(self) -> str:
        return f"[{self.level.upper()}] {self.title}: {self.message}"


def kill_switch_event(trip, *, symbol: str | None = None) -> AlertEvent:
    """Alert for a :class:`S6.killswitch.Trip`."""
    resume = (f"resumes at {trip.until.isoformat()}" if trip.until is not None
              else "halted until `python S6/risk.py reset`")
    return AlertEvent("kill_switch", f"kill-switch tripped ({trip.reason})", f"{trip.detail}; {resume}",
                      "critical", {"reason": trip.reason, "symbol": symbol, "at": trip.at.isoformat(),
                                   "until": trip.until.isoformat() if trip.until is not None else None})


def order_rejected_event(*, symbol: str, side: str, qty, price, reason: str, code: int | str | None = None
                         ) -> AlertEvent:
    """Alert for an order refused by the filters (``OrderCheck.reason``) or by the exchange."""
    return AlertEvent("order_rejected", f"order rejected {side} {symbol}", f"{qty} @ {price}: {reason}", "warning",
                      {"symbol": symbol, "side": side, "qty": str(qty), "price": str(price), "code": code})


def error_event(where: str, exc: BaseException | str) -> AlertEvent:
    """Alert for an unexpected error (the text is redacted like everything else)."""
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return AlertEvent("error", f"error in {where}", text, "critical", {"where": where})


@dataclass(frozen=True)
class Delivery:
    """Outcome of one alert: sent | failed | dropped (rate limit) | scheduled | disabled."""

    status: str
    attempts: int = 0
    http_status: int | None = None
    error: str | None = None


class _Retry(Exception):
    def __init__(self, why: str, retry_after: float | None = None, http_status: int | None = None):
        super().__init__(why)
        self.retry_after, self.http_status = retry_after, http_status


class _Permanent(Exception):
    def __init__(self, why: str, http_status: int | None = None):
        super().__init__(why)
        self.http_status = http_status


class WebhookAlerter:
    """Posts alerts to one webhook. Thread-safe; usable from sync and async code."""

    def __init__(self, url: str | SecretStr, *, kind: str = "generic", config: AlertConfig | None = None,
                 settings=None, clock: Callable[[], float] = time.monotonic):
        from S1.settings import get_settings

        self._url = url.get_secret_value() if isinstance(url, SecretStr) else str(url)
        if not self._url.startswith(("http://", "https://")):
            raise UserError("ALERT_WEBHOOK_URL must be an http(s) URL", "copy the webhook URL from Discord/Slack")
        kind = (kind or "generic").lower()
        if kind not in KINDS:
            raise UserError(f"unknown ALERT_WEBHOOK_KIND {kind!r}", f"use one of {', '.join(KINDS)}")
        self.kind = kind
        self.config = config or AlertConfig()
        self.settings = settings or get_settings()
        self.clock = clock
        self._sent_at: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task] = set()
        self.suppressed = 0        #: dropped since the last alert that went out
        self.stats = collections.Counter()

    @classmethod
    def from_settings(cls, settings=None, config: AlertConfig | None = None) -> "WebhookAlerter | NullAlerter":
        """The configured alerter, or a :class:`NullAlerter` when ALERT_WEBHOOK_URL is unset."""
        from S1.settings import get_settings

        settings = settings or get_settings()
        if settings.alert_webhook_url is None:
            return NullAlerter()
        return cls(settings.alert_webhook_url, kind=settings.alert_webhook_kind, config=config, settings=settings)

    # ------------------------------------------------------------ payloads
    def redact(self, text: str) -> str:
        """Remove configured secrets, the webhook URL and secret-looking values from ``text``."""
        from S1.settings import redact

        text = redact(text, self.settings.secret_values() + [self._url])
        for pat in _PATTERNS:
            text = pat.sub(lambda m: m.group(1) + "***", text)
        return text

    def _clean(self, obj):
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, Mapping):
            return {self.redact(str(k)): self._clean(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self._clean(v) for v in obj]
        if obj is None or isinstance(obj, (bool, int, float)):
            return obj
        return self.redact(str(obj))

    def payload(self, event: AlertEvent, *, suppressed: int = 0) -> dict:
        """The JSON body for this webhook kind (already redacted)."""
        note = f" (+{suppressed} alerts suppressed by the rate limit)" if suppressed else ""
        if self.kind == "generic":
            body = {"event": event.kind, "level": event.level, "title": event.title,
                    "message": event.message + note, "fields": dict(event.fields),
                    "time": event.time.isoformat(), "source": SOURCE}
            if suppressed:
                body["suppressed"] = suppressed
            return self._clean(body)
        text = f"{_ICON.get(event.level, '')} {event.text()}{note}".strip()
        extra = [f"{k}: {v}" for k, v in event.fields.items() if v not in (None, "")]
        if extra:
            text += "\n" + "\n".join(extra)
        text = self.redact(text)
        limit = _LIMITS[self.kind]
        if len(text) > limit:
            text = text[: limit - 1] + "…"
        return {"content": text} if self.kind == "discord" else {"text": text}

    # ----------------------------------------------------------- delivery
    def _admit(self) -> tuple[bool, int]:
        """Rate limit: (allowed, suppressed count to report)."""
        with self._lock:
            now = self.clock()
            while self._sent_at and now - self._sent_at[0] >= 60.0:
                self._sent_at.popleft()
            if len(self._sent_at) >= self.config.max_per_minute:
                self.suppressed += 1
                self.stats["dropped"] += 1
                return False, 0
            self._sent_at.append(now)
            n, self.suppressed = self.suppressed, 0
            return True, n

    def _wait(self, retry_state) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        # "full jitter": uniform in [initial, min(initial x 2^n, max)] (tenacity 8 and 9 alike)
        backoff = wait_random_exponential(multiplier=self.config.backoff_initial_s, max=self.config.backoff_max_s,
                                          min=min(self.config.backoff_initial_s, self.config.backoff_max_s)
                                          )(retry_state)
        if isinstance(exc, _Retry) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), self.config.backoff_max_s)
        return backoff

    async def asend(self, event: AlertEvent) -> Delivery:
        """Deliver ``event`` (await it). Never raises."""
        ok, suppressed = self._admit()
        if not ok:
            log.warning("alert rate limit (%d/min) reached: dropped %r", self.config.max_per_minute,
                        self.redact(event.title))
            return Delivery("dropped")
        data = json.dumps(self.payload(event, suppressed=suppressed), default=str)
        data = self.redact(data)
        attempts, last_status = 0, None
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async for attempt in AsyncRetrying(stop=stop_after_attempt(self.config.max_retries + 1),
                                                   wait=self._wait, retry=retry_if_exception_type(_Retry),
                                                   reraise=True):
                    with attempt:
                        attempts += 1
                        last_status = await self._post(session, data)
        except (_Retry, _Permanent) as exc:
            self.stats["failed"] += 1
            status = getattr(exc, "http_status", None)
            log.error("alert %r not delivered after %d attempt(s): %s", self.redact(event.title), attempts,
                      self.redact(str(exc)))
            return Delivery("failed", attempts, status, self.redact(str(exc)))
        except Exception as exc:  # noqa: BLE001 - alerts must never break the caller
            self.stats["failed"] += 1
            log.error("alert %r not delivered: %s", self.redact(event.title), self.redact(f"{type(exc).__name__}: {exc}"))
            return Delivery("failed", attempts, None, self.redact(f"{type(exc).__name__}: {exc}"))
        self.stats["sent"] += 1
        return Delivery("sent", attempts, last_status)

    async def _post(self, session: aiohttp.ClientSession, data: str) -> int:
        try:
            async with session.post(self._url, data=data.encode("utf-8"),
                                    headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return resp.status
                if resp.status == 429 or resp.status >= 500:
                    retry_after = None
                    if "Retry-After" in resp.headers:
                        try:
                            retry_after = float(resp.headers["Retry-After"])
                        except ValueError:
                            pass
                    log.warning("alert webhook answered HTTP %d: retrying", resp.status)
                    raise _Retry(f"HTTP {resp.status}", retry_after, resp.status)
                raise _Permanent(f"HTTP {resp.status} (not retried: check ALERT_WEBHOOK_URL/KIND)", resp.status)
        except asyncio.TimeoutError:
            log.warning("alert webhook timed out after %.1fs: retrying", self.config.timeout_s)
            raise _Retry(f"timeout after {self.config.timeout_s:g}s") from None
        except aiohttp.ClientError as exc:
            log.warning("alert webhook unreachable (%s): retrying", type(exc).__name__)
            raise _Retry(f"{type(exc).__name__}") from None

    def send(self, event: AlertEvent) -> Delivery:
        """Deliver from synchronous code (blocks up to timeout x attempts). Inside a
        running event loop it schedules the delivery as a task and returns
        ``Delivery("scheduled")`` at once."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.asend(event))
        task = loop.create_task(self.asend(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return Delivery("scheduled")

    def __call__(self, event: AlertEvent) -> Delivery:
        return self.send(event)


class NullAlerter:
    """Stands in when no webhook is configured: logs the alert, sends nothing."""

    kind = "none"

    def __init__(self):
        self.stats: collections.Counter = collections.Counter()

    async def asend(self, event: AlertEvent) -> Delivery:
        return self.send(event)

    def send(self, event: AlertEvent) -> Delivery:
        self.stats["disabled"] += 1
        log.info("alert (no ALERT_WEBHOOK_URL set, not sent): %s", event.text())
        return Delivery("disabled")

    def __call__(self, event: AlertEvent) -> Delivery:
        return self.send(event)


def trip_alert_hook(alerter, *, symbol: str | None = None) -> Callable:
    """``KillSwitch(on_trip=trip_alert_hook(alerter))``: send each trip as an alert."""
    return lambda trip: alerter.send(kill_switch_event(trip, symbol=symbol))
