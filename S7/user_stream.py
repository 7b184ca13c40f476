"""The user-data stream: order and balance events pushed by the exchange, so fills and
cancels are booked as they happen instead of by polling.

Protocol: Binance's **WebSocket API** with ``userDataStream.subscribe.signature``
(``wss://ws-api.testnet.binance.vision/ws-api/v3`` on the spot testnet,
``wss://ws-api.binance.com:443/ws-api/v3`` live). The older listenKey flow
(``POST /api/v3/userDataStream`` + ``wss://…/ws/<listenKey>``) was discontinued
for spot on 2026-02-20; ``userDataStream.subscribe`` (without ``.signature``)
needs an Ed25519 ``session.logon``, while ``.signature`` works with the HMAC keys
the testnet gives out. Events arrive as ``{"subscriptionId": n, "event": {...}}``
(one per text frame): ``executionReport``, ``outboundAccountPosition``,
``balanceUpdate``, and ``eventStreamTerminated`` when the subscription ends.

:class:`UserDataStream` keeps one subscription alive:

- connect, send ``userDataStream.subscribe.signature`` (``apiKey``, ``timestamp``
  from the REST client's server-clock offset, ``recvWindow``, HMAC-SHA256 of the
  sorted params), wait for its answer;
- hand every event to ``on_event`` (the engine books it: idempotent per trade id,
  state never moved backwards -- :meth:`S7.ledger.Ledger.order_state`);
- after **every** successful subscription call ``on_subscribed(reason)``: the engine
  re-reads over REST what may have happened while nobody listened (events are not
  replayed by the exchange) -- the first subscription, a reconnect, a resubscription;
- ``eventStreamTerminated`` / ``listenKeyExpired``: resubscribe on the same connection;
  a dropped or refused connection, a missing heartbeat answer (aiohttp pings every
  ``heartbeat`` s), ``serverShutdown``: reconnect with exponential backoff and jitter
  (``backoff_initial`` doubling up to ``backoff_max``; reset once subscribed);
- a refused key or signature (``-2014/-2015/-1022``) stops the stream with one error
  line: the executor keeps working from REST answers and lookups.

:attr:`UserDataStream.healthy` (connected and subscribed) is what lets the engine
stop polling a resting LIMIT order. Nothing here logs the API key, the secret or a
signature (messages pass :func:`S7.exchange_client._redact` with all three).

The reconnect loop is written by hand rather than with tenacity: it runs for the
whole session, resets its backoff after each success and is cancelled by
:meth:`UserDataStream.close` -- tenacity fits bounded retries of one call.

>>> from S1.settings import Settings
>>> user_stream_url(Settings(_env_file=None), "testnet")
'wss://ws-api.testnet.binance.vision/ws-api/v3'
>>> user_stream_url(Settings(_env_file=None, binance_testnet_api_url="http://127.0.0.1:8770/api"), "testnet")
'ws://127.0.0.1:8770/ws-api/v3'
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections import Counter
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp

from S7.exchange_client import _redact

log = logging.getLogger(__name__)

WS_API_PATH = "/ws-api/v3"
SUBSCRIBE = "userDataStream.subscribe.signature"
TESTNET_WS_API_URL = "wss://ws-api.testnet.binance.vision/ws-api/v3"
LIVE_WS_API_URL = "wss://ws-api.binance.com:443/ws-api/v3"
#: Settings fields (``BINANCE_TESTNET_WS_API_URL`` / ``BINANCE_WS_API_URL``; empty = derived).
SETTING_FIELDS = {"testnet": "binance_testnet_ws_api_url", "live": "binance_ws_api_url"}
_AUTH_CODES = {-1002, -1022, -2014, -2015}
_END_EVENTS = ("eventStreamTerminated", "listenKeyExpired")


def sign_params(params: dict, secret: str) -> str:
    """A WebSocket API signature: HMAC-SHA256 (hex) of the params sorted by name as ``k=v&k=v``."""
    payload = "&".join(f"{k}={params[k]}" for k in sorted(params))
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def user_stream_url(settings, mode: str) -> str:
    """The WebSocket API URL of ``mode`` (``testnet`` | ``live``).

    1. the settings field ``BINANCE_TESTNET_WS_API_URL`` / ``BINANCE_WS_API_URL`` when
       :class:`S1.settings.Settings` has it;
    2. a REST URL on this machine (the local test exchange, offline mode) ->
       the same host and port, path ``/ws-api/v3``;
    3. Binance's documented endpoint.
    """
    if mode not in SETTING_FIELDS:
        raise ValueError(f"mode must be 'testnet' or 'live', got {mode!r}")
    explicit = getattr(settings, SETTING_FIELDS[mode], None)
    if explicit:
        return str(explicit).rstrip("/")
    rest = settings.binance_testnet_api_url if mode == "testnet" else settings.binance_api_url
    u = urlsplit(rest)
    if u.hostname in ("127.0.0.1", "localhost", "::1"):
        scheme = "wss" if u.scheme == "https" else "ws"
        return f"{scheme}://{u.netloc}{WS_API_PATH}"
    return TESTNET_WS_API_URL if mode == "testnet" else LIVE_WS_API_URL


class StreamAuthError(Exception):
    """The exchange refused the key or the signature of the subscription."""


class StreamError(Exception):
    """The subscription failed for another reason (retried with backoff)."""


class UserDataStream:
    """One user-data subscription kept alive (see the module docstring). Use
    :meth:`start` / :meth:`close` (or ``async with``)."""

    def __init__(self, *, url: str, api_key: str, api_secret: str,
                 on_event: Callable[[dict], Awaitable[None]],
                 on_subscribed: Callable[[str], Awaitable[None]] | None = None,
                 time_offset_ms: Callable[[], int] = lambda: 0, recv_window_ms: int = 5000,
                 backoff_initial: float = 0.25, backoff_max: float = 30.0, timeout: float = 10.0,
                 heartbeat: float = 20.0):
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        self.url = url
        self._key, self._secret = api_key, api_secret
        self.on_event, self.on_subscribed = on_event, on_subscribed
        self.time_offset_ms = time_offset_ms
        self.recv_window_ms = int(recv_window_ms)
        self.backoff_initial, self.backoff_max = float(backoff_initial), float(backoff_max)
        self.timeout, self.heartbeat = float(timeout), float(heartbeat)
        self.healthy = False
        self.stopped_reason: str | None = None   #: set when the stream gave up for good (bad keys)
        self.stats: Counter = Counter()          #: connects, subscribed, events, drops, terminated, resyncs
        self._signatures: list[str] = []
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None
        self._up = asyncio.Event()
        self._closing = False

    def __repr__(self) -> str:   # never the keys
        return f"UserDataStream({self.url!r}, healthy={self.healthy})"

    def _clean(self, text: Any) -> str:
        return _redact(str(text), (self._key, self._secret, *self._signatures[-4:]))

    # ------------------------------------------------------------- lifecycle
    async def start(self, *, wait: float | None = 5.0) -> bool:
        """Start the background task; wait up to ``wait`` s for the first subscription.
        Returns :attr:`healthy`."""
        if self._task is None:
            self._session = aiohttp.ClientSession()
            self._task = asyncio.create_task(self._run(), name="s7-user-stream")
        if wait:
            try:
                await asyncio.wait_for(self._up.wait(), wait)
            except asyncio.TimeoutError:
                pass
        return self.healthy

    async def close(self) -> None:
        self._closing = True
        self.healthy = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "UserDataStream":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ------------------------------------------------------------------ loop
    async def _run(self) -> None:
        attempt = 0
        first = True
        while not self._closing:
            try:
                assert self._session is not None
                self.stats["connects"] += 1
                async with self._session.ws_connect(self.url, heartbeat=self.heartbeat,
                                                    timeout=aiohttp.ClientWSTimeout(ws_close=self.timeout),
                                                    autoping=True) as ws:
                    await self._subscribe(ws, "started" if first else "reconnected")
                    first, attempt = False, 0
                    await self._read(ws)
                if not self._closing:
                    self.stats["drops"] += 1
                    log.warning("user-data stream: connection closed by the server; reconnecting")
            except asyncio.CancelledError:
                raise
            except StreamAuthError as exc:
                self.healthy = False
                self.stopped_reason = self._clean(exc)
                log.error("user-data stream refused (%s) -- check the API key/secret in .env; order states come "
                          "from REST answers and lookups only", self.stopped_reason)
                return
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, StreamError, ValueError) as exc:
                if not self._closing:
                    self.stats["drops"] += 1
                    log.warning("user-data stream down (%s); reconnecting", self._clean(
                        f"{type(exc).__name__}: {exc}" if isinstance(exc, StreamError) else type(exc).__name__))
            self.healthy = False
            if self._closing:
                return
            delay = min(self.backoff_max, self.backoff_initial * 2 ** attempt) * random.uniform(0.8, 1.2)
            attempt += 1
            self.stats["backoff_waits"] += 1
            await asyncio.sleep(delay)

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse, reason: str) -> None:
        params: dict[str, Any] = {"apiKey": self._key, "recvWindow": self.recv_window_ms,
                                  "timestamp": int(time.time() * 1000) + int(self.time_offset_ms() or 0)}
        sig = sign_params(params, self._secret)
        self._signatures.append(sig)
        params["signature"] = sig
        rid = str(uuid.uuid4())
        await ws.send_str(json.dumps({"id": rid, "method": SUBSCRIBE, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StreamError("no answer to the subscription")
            msg = await ws.receive(timeout=left)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise StreamError(f"connection {msg.type.name.lower()} before the subscription was answered")
            data = json.loads(msg.data)
            if data.get("id") != rid:
                if "event" in data:
                    await self._event(data["event"])
                continue
            if data.get("status") == 200:
                break
            err = data.get("error") or {}
            text = f"{err.get('code')} {err.get('msg')}"
            if err.get("code") in _AUTH_CODES:
                raise StreamAuthError(text)
            raise StreamError(text)
        self.healthy = True
        self.stats["subscribed"] += 1
        log.info("user-data stream %s: subscribed at %s", reason, self.url)
        if self.on_subscribed is not None:
            await self.on_subscribed(reason)
            self.stats["resyncs"] += 1
        self._up.set()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            ev = data.get("event")
            if not isinstance(ev, dict):
                continue   # an answer to a request we no longer wait for
            kind = ev.get("e")
            if kind in _END_EVENTS:
                self.healthy = False
                self.stats["terminated"] += 1
                log.warning("user-data stream: %s; subscribing again", kind)
                await self._subscribe(ws, "resubscribed")
            elif kind == "serverShutdown":
                log.warning("user-data stream: serverShutdown; reconnecting")
                return
            else:
                await self._event(ev)

    async def _event(self, ev: dict) -> None:
        self.stats["events"] += 1
        try:
            await self.on_event(ev)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad event must not kill the stream; REST reconciles
            log.error("user-data event %s not applied (%s); the next reconciliation covers it",
                      ev.get("e"), self._clean(f"{type(exc).__name__}: {exc}"))


__all__ = ["LIVE_WS_API_URL", "SETTING_FIELDS", "SUBSCRIBE", "WS_API_PATH", "sign_params", "StreamAuthError", "StreamError", "TESTNET_WS_API_URL",
           "UserDataStream", "user_stream_url"]
