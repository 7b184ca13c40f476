"""Signed Binance spot order endpoints through python-binance, and idempotent order submission.

:class:`BinanceTradingClient` is python-binance's :class:`binance.AsyncClient`
(its HMAC-SHA256 signing, ``timestamp``/``recvWindow`` and parameter ordering),
extended by subclassing -- not a hand-written HTTP client -- with what an
executor needs:

1. **A base URL from settings** (``BINANCE_TESTNET_API_URL`` for ``--testnet``,
   ``BINANCE_API_URL`` for ``--live``; tests point them at :mod:`S7.local.exchange`).
2. **Typed outcomes.** Every answer is classified by what it means for the order:
   :class:`OrderRejected` (``-1013`` filters, ``-2010`` balance/duplicate, ... --
   definitely *not* executed), :class:`ClockSkew` (``-1021``), :class:`RateLimited`
   (429/418 + ``Retry-After``), :class:`AuthFailed` (``-1022``/``-2014``/``-2015``),
   :class:`NotSent` (the connection never opened) and :class:`OutcomeUnknown`
   (timeout, 5xx, dropped connection: *it may have been executed*).
3. **Time sync** with ``GET /api/v3/time`` (offset = server - local at the RTT
   midpoint) at start and on every ``-1021``.
4. **Rate limits.** 429/418 open a back-off window from ``Retry-After``; no request
   is sent into it (short windows are waited out, long ones raise :class:`RateLimited`).
5. **Secrets.** Error texts pass :func:`S1.settings.redact` with this client's own
   key and secret too; nothing here logs a request URL or body.

:func:`submit_order` is the one way an order leaves the executor. Its
``newClientOrderId`` is deterministic per signal (:func:`S7.orders.client_order_id`);
when a request times out or gets a 5xx it **looks the order up by that id before
anything is re-sent**: found -> that is the order; not found -> it waits until the
lost request's ``recvWindow`` has passed (after that the exchange can no longer
accept it), looks again, and only then re-sends the *same* id. A lookup that keeps
failing leaves the order ``UNKNOWN`` (nothing re-sent; reconciliation resolves it).
So one signal never produces two orders.

>>> async def demo():                                                   # doctest: +SKIP
...     async with BinanceTradingClient(base_url="https://testnet.binance.vision/api",
...                                     api_key=k, api_secret=s) as ex:
...         res = await submit_order(ex, symbol="BTCUSDT", side="BUY", order_type="MARKET",
...                                  quantity="0.001", client_order_id="s7-...")
...         res.status, res.order["status"]
('accepted', 'FILLED')
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import aiohttp
from binance import AsyncClient
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

log = logging.getLogger(__name__)

#: Longest Retry-After (s) a request waits out before giving up with :class:`RateLimited`.
DEFAULT_MAX_RATE_WAIT = 10.0
#: Largest recvWindow Binance accepts (ms).
MAX_RECV_WINDOW_MS = 60_000


# --------------------------------------------------------------------------- errors
class ExchangeError(Exception):
    """Base class. ``executed`` says what we know about an order request's effect:
    ``"no"`` (certainly not executed) or ``"unknown"``."""

    executed = "no"

    def __init__(self, message: str, *, code: int | None = None, http_status: int | None = None,
                 secrets: tuple[str, ...] = ()):
        message = _redact(message, secrets)
        super().__init__(message)
        self.message, self.code, self.http_status = message, code, http_status


class OrderRejected(ExchangeError):
    """The exchange refused the request (``-1013``, ``-2010``, ``-1121`` ...): nothing executed."""


class FilterFailure(OrderRejected):
    """``-1013``: quantity/price/notional break the symbol's filters."""


class InsufficientBalance(OrderRejected):
    """``-2010``: new order rejected (insufficient balance, duplicate order ...)."""


class OrderNotFound(ExchangeError):
    """``-2013`` (query) / ``-2011`` (cancel): the exchange has no such (open) order."""


class ClockSkew(ExchangeError):
    """``-1021``: our timestamp is outside the recvWindow (clock skew): not executed."""


class AuthFailed(ExchangeError):
    """``-1022`` bad signature, ``-2014``/``-2015`` bad API key or permissions: fix the keys."""


class RateLimited(ExchangeError):
    """HTTP 429 / 418 (IP ban) with ``Retry-After`` seconds: not executed."""

    def __init__(self, message: str, *, retry_after: float, http_status: int, secrets: tuple[str, ...] = ()):
        super().__init__(message, code=-1003, http_status=http_status, secrets=secrets)
        self.retry_after = retry_after


class NotSent(ExchangeError):
    """The connection could not even be opened: the request never reached the exchange."""


class OutcomeUnknown(ExchangeError):
    """Timeout, 5xx or a dropped connection: the request may have been executed."""

    executed = "unknown"


_AUTH_CODES = {-1002, -1022, -2014, -2015}


def _redact(text: str, extra: tuple[str, ...] = ()) -> str:
    from S1.settings import get_settings, redact

    try:
        secrets = get_settings().secret_values()
    except Exception:  # noqa: BLE001 - settings themselves may be broken
        secrets = []
    return redact(str(text), [*secrets, *[s for s in extra if s]])


def classify(status: int, body: str, *, retry_after: float | None = None, what: str = "request",
             secrets: tuple[str, ...] = ()) -> ExchangeError:
    """The :class:`ExchangeError` an HTTP error answer means (pure; used by the client and tests)."""
    import json

    if status in (429, 418):
        ban = " (IP banned)" if status == 418 else ""
        return RateLimited(f"{what}: HTTP {status}{ban}, Retry-After {retry_after or 0:g}s",
                           retry_after=float(retry_after or 1.0), http_status=status, secrets=secrets)
    if status >= 500:
        return OutcomeUnknown(f"{what}: HTTP {status} from the exchange (outcome unknown)", http_status=status,
                              secrets=secrets)
    code, msg = None, body[:200]
    try:
        payload = json.loads(body)
        code, msg = payload.get("code"), str(payload.get("msg", ""))
    except (ValueError, AttributeError):
        pass
    text = f"{what}: Binance error {code}: {msg}" if code is not None else f"{what}: HTTP {status}: {msg}"
    kw = dict(code=code, http_status=status, secrets=secrets)
    if code == -1013:
        return FilterFailure(text, **kw)
    if code == -2010:
        return InsufficientBalance(text, **kw)
    if code in (-2013, -2011):
        return OrderNotFound(text, **kw)
    if code == -1021:
        return ClockSkew(text, **kw)
    if code in _AUTH_CODES or status in (401, 403):
        return AuthFailed(text, **kw)
    if code == -1003:
        return RateLimited(text, retry_after=float(retry_after or 1.0), http_status=status, secrets=secrets)
    return OrderRejected(text, **kw)


# ---------------------------------------------------------------------- the venue API
class TradingVenue(Protocol):
    """What the engine needs from an exchange (the testnet/live client and the dry-run simulator)."""

    name: str
    recv_window_s: float

    async def sync_time(self) -> int: ...
    async def server_time_ms(self) -> int: ...
    async def symbol_info(self, symbol: str) -> dict: ...
    async def new_order(self, **params) -> dict: ...
    async def get_order(self, *, symbol: str, client_order_id: str) -> dict | None: ...
    async def cancel_order(self, *, symbol: str, client_order_id: str) -> dict: ...
    async def open_orders(self, *, symbol: str | None = None) -> list[dict]: ...
    async def account(self) -> dict: ...
    async def my_trades(self, *, symbol: str, from_id: int | None = None, start_ms: int | None = None,
                        order_id: int | None = None, limit: int = 1000) -> list[dict]: ...


# ------------------------------------------------------------------------ the client
class BinanceTradingClient(AsyncClient):
    """python-binance ``AsyncClient`` for the signed spot endpoints (use ``async with``).

    ``timeout`` is per request (s); ``recv_window_ms`` is sent with every signed
    request (python-binance's ``REQUEST_RECVWINDOW``).
    """

    def __init__(self, *, base_url: str, api_key: str, api_secret: str, timeout: float = 10.0,
                 recv_window_ms: int = 5000, max_rate_wait: float = DEFAULT_MAX_RATE_WAIT,
                 read_retries: int = 3, name: str | None = None):
        if not 0 < int(recv_window_ms) <= MAX_RECV_WINDOW_MS:
            raise ValueError(f"recv_window_ms must be in 1..{MAX_RECV_WINDOW_MS}, got {recv_window_ms}")
        super().__init__(api_key=api_key, api_secret=api_secret)
        self.API_URL = base_url.rstrip("/")
        self.REQUEST_TIMEOUT = float(timeout)
        self.REQUEST_RECVWINDOW = int(recv_window_ms)
        self.recv_window_s = int(recv_window_ms) / 1000.0
        self.max_rate_wait = float(max_rate_wait)
        self.read_retries = int(read_retries)
        self.name = name or self.API_URL
        self._secrets = tuple(s for s in (api_key, api_secret) if s)
        self.blocked_until = 0.0          # monotonic time before which nothing is sent
        self.used_weight: int | None = None
        self.stats: dict[str, int] = {"requests": 0, "orders_sent": 0, "rate_limited": 0, "unknown": 0,
                                      "time_syncs": 0}
        self.last_order_sent_at: float | None = None  # time.time() when the last POST /order left

    def __repr__(self) -> str:  # never the keys
        return f"BinanceTradingClient({self.name!r})"

    async def __aenter__(self) -> "BinanceTradingClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close_connection()

    # ---------------------------------------------------------------- plumbing
    async def _request(self, method, uri: str, signed: bool, force_params: bool = False, **kwargs):
        what = f"{method.upper()} {uri.rsplit('/api/', 1)[-1]}"
        await self._respect_ban(what)
        self.stats["requests"] += 1
        if method == "post" and uri.endswith("/order"):
            self.stats["orders_sent"] += 1
            self.last_order_sent_at = time.time()
        try:
            return await super()._request(method, uri, signed, force_params, **kwargs)
        except ExchangeError:
            raise
        except aiohttp.ClientConnectorError as exc:
            raise NotSent(f"{what}: cannot connect to {self.name} ({type(exc).__name__})",
                          secrets=self._secrets) from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            self.stats["unknown"] += 1
            raise OutcomeUnknown(f"{what}: no answer within {self.REQUEST_TIMEOUT:g}s (outcome unknown)",
                                 secrets=self._secrets) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            self.stats["unknown"] += 1
            raise OutcomeUnknown(f"{what}: connection lost ({type(exc).__name__}; outcome unknown)",
                                 secrets=self._secrets) from None

    async def _respect_ban(self, what: str) -> None:
        wait = self.blocked_until - time.monotonic()
        if wait <= 0:
            return
        if wait > self.max_rate_wait:
            raise RateLimited(f"{what}: not sent, the exchange asked us to back off for {wait:.0f}s more",
                              retry_after=wait, http_status=429, secrets=self._secrets)
        log.warning("rate limit: waiting %.1fs before %s (Retry-After)", wait, what)
        await asyncio.sleep(wait)

    async def _handle_response(self, response: aiohttp.ClientResponse):
        used = response.headers.get("X-MBX-USED-WEIGHT-1M")
        if used is not None and used.isdigit():
            self.used_weight = int(used)
        if 200 <= response.status < 300:
            text = await response.text()
            if not text:
                return {}
            try:
                return await response.json(content_type=None)
            except ValueError:
                raise OutcomeUnknown(f"{response.method} {response.url.path}: unreadable answer",
                                     http_status=response.status, secrets=self._secrets) from None
        retry_after = None
        if "Retry-After" in response.headers:
            try:
                retry_after = float(response.headers["Retry-After"])
            except ValueError:
                retry_after = 1.0
        body = await response.text()
        err = classify(response.status, body, retry_after=retry_after,
                       what=f"{response.method} {response.url.path.rsplit('/api/', 1)[-1]}", secrets=self._secrets)
        if isinstance(err, RateLimited):
            self.stats["rate_limited"] += 1
            self.blocked_until = max(self.blocked_until, time.monotonic() + err.retry_after)
            log.warning("%s: no request before %.1fs", err.message, err.retry_after)
        if isinstance(err, OutcomeUnknown):
            self.stats["unknown"] += 1
        raise err

    async def _read(self, fn: Callable, *args, **kwargs):
        """An idempotent read with bounded retries (timeouts, 5xx, drops) and one
        re-sync on ``-1021``; short rate-limit windows are waited out by the gate."""
        synced = False

        def attempt_fn():
            # python-binance writes timestamp/recvWindow/signature into ``data``: a fresh copy per attempt
            kw = dict(kwargs)
            if isinstance(kw.get("data"), dict):
                kw["data"] = dict(kw["data"])
            return fn(*args, **kw)

        while True:
            try:
                async for attempt in AsyncRetrying(
                        stop=stop_after_attempt(self.read_retries + 1),
                        wait=wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.1),
                        retry=retry_if_exception_type((OutcomeUnknown, NotSent, RateLimited)), reraise=True):
                    with attempt:
                        return await attempt_fn()
            except ClockSkew:
                if synced:
                    raise
                synced = True
                await self.sync_time()

    # ---------------------------------------------------------------- endpoints
    async def sync_time(self) -> int:
        """Set python-binance's ``timestamp_offset`` from the server clock; returns it (ms)."""
        t0 = time.time()
        res = await self._read(self._get, "time")
        t1 = time.time()
        self.timestamp_offset = int(res["serverTime"] - (t0 + t1) / 2 * 1000)
        self.stats["time_syncs"] += 1
        log.info("clock: server time offset %+d ms (round trip %.0f ms)", self.timestamp_offset, (t1 - t0) * 1000)
        return self.timestamp_offset

    async def server_time_ms(self) -> int:
        res = await self._read(self._get, "time")
        return int(res["serverTime"])

    async def symbol_info(self, symbol: str) -> dict:
        """The symbol's ``exchangeInfo`` entry (``OrderRejected`` code -1121 when unknown)."""
        info = await self._read(self._get, "exchangeInfo", data={"symbol": symbol})
        for s in info.get("symbols", []):
            if s.get("symbol") == symbol:
                return s
        raise OrderRejected(f"exchangeInfo: unknown symbol {symbol}", code=-1121)

    async def new_order(self, **params) -> dict:
        """One ``POST /api/v3/order`` (no retry here: see :func:`submit_order`)."""
        params.setdefault("newOrderRespType", "FULL")
        return await self._post("order", True, data=params)

    async def test_order(self, **params) -> dict:
        return await self._read(self._post, "order/test", True, data=params)

    async def get_order(self, *, symbol: str, client_order_id: str) -> dict | None:
        """``GET /api/v3/order?origClientOrderId=`` -- None when the exchange has no such order."""
        try:
            return await self._read(self._get, "order", True, data={"symbol": symbol,
                                                                   "origClientOrderId": client_order_id})
        except OrderNotFound:
            return None

    async def cancel_order(self, *, symbol: str, client_order_id: str) -> dict:
        return await self._read(self._delete, "order", True, data={"symbol": symbol,
                                                                  "origClientOrderId": client_order_id})

    async def open_orders(self, *, symbol: str | None = None) -> list[dict]:
        return await self._read(self._get, "openOrders", True, data={"symbol": symbol} if symbol else {})

    async def account(self) -> dict:
        return await self._read(self._get, "account", True, data={})

    async def my_trades(self, *, symbol: str, from_id: int | None = None, start_ms: int | None = None,
                        order_id: int | None = None, limit: int = 1000) -> list[dict]:
        data: dict[str, Any] = {"symbol": symbol, "limit": int(limit)}
        if order_id is not None:
            data["orderId"] = int(order_id)
        elif from_id is not None:
            data["fromId"] = int(from_id)
        elif start_ms is not None:
            data["startTime"] = int(start_ms)
        return await self._read(self._get, "myTrades", True, data=data)


# -------------------------------------------------------------- idempotent submission
@dataclass
class SubmitResult:
    """Outcome of :func:`submit_order`.

    ``status``: ``accepted`` (``order`` is the exchange's view), ``rejected``
    (``error`` says why; nothing executed), ``rate_limited`` (not sent: the back-off
    is longer than we may wait) or ``unknown`` (sent, outcome still unknown: nothing
    more will be sent for it until a lookup resolves it).
    """

    status: str
    client_order_id: str
    order: dict | None = None
    error: ExchangeError | None = None
    sends: int = 0
    lookups: int = 0
    found_by_lookup: bool = False
    notes: list[str] = field(default_factory=list)


async def lookup_order(venue: TradingVenue, *, symbol: str, client_order_id: str, attempts: int = 2,
                       delay: float = 0.5) -> tuple[str, dict | None]:
    """``("found", order)``, ``("absent", None)`` or ``("failed", None)`` after ``attempts`` tries
    (each try is itself a read with bounded retries)."""
    for i in range(max(1, attempts)):
        try:
            order = await venue.get_order(symbol=symbol, client_order_id=client_order_id)
            return ("found", order) if order is not None else ("absent", None)
        except (OutcomeUnknown, NotSent, RateLimited, ClockSkew) as exc:
            log.warning("order lookup %s: %s (attempt %d/%d)", client_order_id, exc.message, i + 1, attempts)
            if isinstance(exc, ClockSkew):
                try:
                    await venue.sync_time()
                except ExchangeError:
                    pass
            await asyncio.sleep(delay * (2 ** i))
    return "failed", None



async def _resolved_by_lookup(venue, res, symbol: str, client_order_id: str, attempts: int, when: str) -> bool:
    """Look the order up by its client id; True when that settles ``res`` (found, or the
    lookup itself failed so nothing may be re-sent), False when it is not at the exchange."""
    res.lookups += 1
    state, order = await lookup_order(venue, symbol=symbol, client_order_id=client_order_id, attempts=attempts)
    if state == "found":
        res.status, res.order, res.found_by_lookup = "accepted", order, True
        res.notes.append(f"found by client id {when}: not re-sent")
        return True
    if state == "failed":
        res.notes.append("lookup failed: outcome unknown, not re-sent")
        return True
    return False


async def submit_order(venue: TradingVenue, *, symbol: str, side: str, order_type: str, quantity: str,
                       client_order_id: str, price: str | None = None, time_in_force: str | None = None,
                       max_sends: int = 3, max_rate_wait: float = DEFAULT_MAX_RATE_WAIT,
                       lookup_first: bool = False, lookup_attempts: int = 2) -> SubmitResult:
    """Send one order idempotently (see the module docstring). Never raises
    :class:`ExchangeError` except :class:`AuthFailed` (the keys are wrong: nothing
    else can work)."""
    res = SubmitResult("unknown", client_order_id)
    params: dict[str, Any] = {"symbol": symbol, "side": side, "type": order_type, "quantity": quantity,
                              "newClientOrderId": client_order_id}
    if price is not None:
        params["price"] = price
    if time_in_force is not None:
        params["timeInForce"] = time_in_force
    if lookup_first:  # a resumed intent: it may have reached the exchange before a crash
        res.lookups += 1
        state, order = await lookup_order(venue, symbol=symbol, client_order_id=client_order_id,
                                          attempts=lookup_attempts)
        if state == "found":
            res.status, res.order, res.found_by_lookup = "accepted", order, True
            return res
        if state == "failed":
            res.notes.append("lookup before resend failed: not sent")
            return res
    skew_synced = False
    while res.sends < max_sends:
        res.sends += 1
        t_sent = time.monotonic()
        try:
            res.order = await venue.new_order(**params)
            res.status = "accepted"
            return res
        except AuthFailed:
            raise
        except ClockSkew as exc:
            res.error = exc
            if skew_synced:
                res.status = "rejected"
                return res
            skew_synced = True
            res.notes.append("-1021: clock re-synced, sent again")
            log.warning("order %s: %s -- syncing with the server clock and retrying once", client_order_id,
                        exc.message)
            await venue.sync_time()
            continue
        except RateLimited as exc:
            res.error = exc
            if exc.retry_after > max_rate_wait:
                res.status = "rate_limited"
                return res
            res.notes.append(f"HTTP {exc.http_status}: waited {exc.retry_after:g}s")
            log.warning("order %s: %s -- waiting and sending again (not executed)", client_order_id, exc.message)
            await asyncio.sleep(exc.retry_after)
            continue
        except NotSent as exc:
            res.error = exc
            res.notes.append("not sent (no connection)")
            await asyncio.sleep(min(2.0, 0.25 * 2 ** res.sends))
            continue
        except OrderRejected as exc:
            res.status, res.error = "rejected", exc
            return res
        except OutcomeUnknown as exc:
            res.error = exc
            log.warning("order %s: %s -- looking it up by its client id before anything is re-sent",
                        client_order_id, exc.message)
            if await _resolved_by_lookup(venue, res, symbol, client_order_id, lookup_attempts,
                                         "after an unknown outcome"):
                return res
            # absent now; the lost request can still land until its recvWindow has passed
            wait = t_sent + venue.recv_window_s + 1.0 - time.monotonic()
            if wait > 0:
                log.info("order %s not found yet: waiting %.1fs for the lost request's recvWindow to pass",
                         client_order_id, wait)
                await asyncio.sleep(wait)
                if await _resolved_by_lookup(venue, res, symbol, client_order_id, lookup_attempts,
                                             "after the recvWindow"):
                    return res
            res.notes.append("not at the exchange after the recvWindow: sent again with the same id")
            continue
    if res.error is not None and res.error.executed == "no":
        res.status = "rejected"
    return res


__all__ = ["AuthFailed", "BinanceTradingClient", "ClockSkew", "ExchangeError", "FilterFailure",
           "InsufficientBalance", "NotSent", "OrderNotFound", "OrderRejected", "OutcomeUnknown", "RateLimited",
           "SubmitResult", "TradingVenue", "classify", "lookup_order", "submit_order"]
