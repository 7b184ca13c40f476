"""A signed Binance USD-M futures client (the routes a futures paper trader needs): the
symbol's filters, leverage, margin type, leverage brackets, MARKET orders with a client id
and ``reduceOnly``, order lookups, fills, positions, the USDT balance and the income
(funding) history. The base URL and keys come from the settings
(``BINANCE_FUTURES_TESTNET_API_URL`` -- the real futures testnet by default --
``BINANCE_FUTURES_TESTNET_API_KEY`` / ``_SECRET``); the tests run it against
:class:`S7.local.usdm.LocalUSDM`. :mod:`S7.futures_session` drives it
(``python S7/executor.py --market usdm``).

Orders are idempotent as on spot (:mod:`S7.exchange_client`): every order carries a
deterministic ``newClientOrderId``; when the outcome of a POST is unknown (timeout, 5xx, a
dropped connection) :meth:`UsdmClient.submit_market` looks the order up by that id first,
waits out the ``recvWindow`` before a second look, and only then sends the *same* id again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp

from S1.errors import UserError

#: Binance's answers for a bad key / signature / permission.
AUTH_CODES = (-2014, -2015, -1022, -2008)


class FuturesError(Exception):
    """An error answer of the futures API (``code``, ``msg``)."""

    def __init__(self, status: int, code: int | None, msg: str):
        super().__init__(f"HTTP {status} {code}: {msg}")
        self.status, self.code, self.msg = status, code, msg


class FuturesAuthError(FuturesError):
    """The exchange refused our key or signature (``-2014`` / ``-2015`` / ``-1022``)."""


class FuturesUnavailable(FuturesError):
    """No usable answer: a timeout, a dropped connection, a 5xx -- the outcome is unknown."""


def futures_filters(entry: dict):
    """:class:`S6.filters.SymbolFilters` of a USD-M ``exchangeInfo`` symbol entry (its
    ``MIN_NOTIONAL`` filter says ``notional`` where spot says ``minNotional``)."""
    from S6.filters import SymbolFilters

    fixed = []
    for f in entry.get("filters", []):
        if f.get("filterType") == "MIN_NOTIONAL" and "minNotional" not in f and "notional" in f:
            f = {**f, "minNotional": f["notional"]}
        fixed.append(f)
    return SymbolFilters.from_symbol_info({**entry, "filters": fixed})


class UsdmClient:
    """``async with UsdmClient(url, key, secret) as c: await c.submit_market(...)``."""

    def __init__(self, base_url: str, api_key: str, api_secret: str, *, recv_window: int = 5000,
                 timeout: float = 10.0, name: str | None = None):
        if not api_key or not api_secret:
            raise UserError("no USD-M futures testnet keys",
                            "set BINANCE_FUTURES_TESTNET_API_KEY and BINANCE_FUTURES_TESTNET_API_SECRET in .env")
        self.base_url = base_url.rstrip("/")
        self.name = name or f"USD-M futures testnet {self.base_url}"
        self._key, self._secret = api_key, api_secret
        self.recv_window = recv_window
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.time_offset_ms = 0
        self.posts = 0          #: order POSTs sent (for the summary and the tests)

    @classmethod
    def from_settings(cls, settings=None, *, recv_window: int = 5000) -> UsdmClient:
        from S1.settings import get_settings

        s = settings or get_settings()
        key = s.binance_futures_testnet_api_key
        secret = s.binance_futures_testnet_api_secret
        return cls(s.binance_futures_testnet_api_url, key.get_secret_value() if key else "",
                   secret.get_secret_value() if secret else "", timeout=s.http_timeout, recv_window=recv_window)

    @property
    def secrets(self) -> tuple[str, str]:
        return self._key, self._secret

    async def __aenter__(self) -> UsdmClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ plumbing
    async def _request(self, method: str, url: str, headers: dict | None = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.request(method, url, headers=headers) as resp:
                text = await resp.text()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise FuturesUnavailable(0, None, f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
        try:
            import json

            data = json.loads(text) if text else None
        except ValueError:
            data = None
        if status >= 500 or (status >= 400 and not isinstance(data, dict)):
            raise FuturesUnavailable(status, None, (text or "")[:120])
        if status >= 400:
            cls = FuturesAuthError if data.get("code") in AUTH_CODES else FuturesError
            raise cls(status, data.get("code"), data.get("msg", str(data)))
        return data

    async def _public(self, path: str, params: dict[str, Any] | None = None) -> Any:
        q = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        return await self._request("GET", f"{self.base_url}{path}" + (f"?{q}" if q else ""))

    async def _signed(self, method: str, path: str, params: dict[str, Any], *, retry_clock: bool = True) -> Any:
        q = {k: v for k, v in params.items() if v is not None}
        q.update(timestamp=int(time.time() * 1000) + self.time_offset_ms, recvWindow=self.recv_window)
        query = urlencode(q)
        sig = hmac.new(self._secret.encode(), query.encode(), hashlib.sha256).hexdigest()
        try:
            return await self._request(method, f"{self.base_url}{path}?{query}&signature={sig}",
                                       {"X-MBX-APIKEY": self._key})
        except FuturesError as exc:
            if exc.code == -1021 and retry_clock:        # clock skew: re-sync once, then retry once
                await self.sync_time()
                return await self._signed(method, path, params, retry_clock=False)
            raise

    async def sync_time(self) -> int:
        """The offset to the exchange's clock (at the round trip's midpoint), in ms."""
        t0 = time.time() * 1000
        data = await self._public("/fapi/v1/time")
        t1 = time.time() * 1000
        self.time_offset_ms = int(data["serverTime"] - (t0 + t1) / 2)
        return self.time_offset_ms

    # --------------------------------------------------------------------- reads
    async def symbol_info(self, symbol: str) -> dict | None:
        """The ``exchangeInfo`` entry of ``symbol`` (None: not listed)."""
        info = await self._public("/fapi/v1/exchangeInfo")
        return next((s for s in info.get("symbols", []) if s.get("symbol") == symbol), None)

    async def leverage_brackets(self, symbol: str) -> list[dict]:
        """``symbol``'s notional brackets (``GET /fapi/v1/leverageBracket``, signed): documented as
        one object when ``symbol`` is sent, a list of them otherwise -- both are accepted."""
        data = await self._signed("GET", "/fapi/v1/leverageBracket", {"symbol": symbol})
        rows = data if isinstance(data, list) else [data]
        entry = next((r for r in rows if r.get("symbol") == symbol), None)
        if entry is None or not entry.get("brackets"):
            raise FuturesError(200, None, f"no leverage brackets for {symbol} in the answer")
        return sorted(entry["brackets"], key=lambda b: float(b.get("notionalFloor", 0)))

    async def position(self, symbol: str) -> dict | None:
        rows = await self._signed("GET", "/fapi/v2/positionRisk", {"symbol": symbol})
        return next((r for r in rows if r["symbol"] == symbol and r.get("positionSide", "BOTH") == "BOTH"), None)

    async def usdt_balance(self) -> float:
        rows = await self._signed("GET", "/fapi/v2/balance", {})
        return float(next(r for r in rows if r["asset"] == "USDT")["balance"])

    async def income(self, symbol: str | None = None, *, income_type: str | None = None,
                     start_time: int | None = None, limit: int = 1000) -> list[dict]:
        rows = await self._signed("GET", "/fapi/v1/income", {"symbol": symbol, "incomeType": income_type,
                                                               "startTime": start_time, "limit": limit})
        return sorted(rows, key=lambda r: (int(r["time"]), int(r.get("tranId", 0))))

    async def funding_income(self, symbol: str | None = None, *, start_time: int | None = None) -> list[dict]:
        return await self.income(symbol, income_type="FUNDING_FEE", start_time=start_time)

    async def query_order(self, symbol: str, client_order_id: str) -> dict | None:
        """The order with this client id (None: the exchange does not know it, -2013)."""
        try:
            return await self._signed("GET", "/fapi/v1/order", {"symbol": symbol,
                                                                 "origClientOrderId": client_order_id})
        except FuturesError as exc:
            if exc.code == -2013:
                return None
            raise

    async def user_trades(self, symbol: str, *, order_id: int | None = None, start_time: int | None = None
                          ) -> list[dict]:
        return await self._signed("GET", "/fapi/v1/userTrades", {"symbol": symbol, "orderId": order_id,
                                                                  "startTime": start_time})

    # -------------------------------------------------------------------- writes
    async def set_leverage(self, symbol: str, leverage: int) -> dict:
        return await self._signed("POST", "/fapi/v1/leverage", {"symbol": symbol, "leverage": int(leverage)})

    async def set_margin_type(self, symbol: str, margin_type: str = "ISOLATED") -> bool:
        """Set ``ISOLATED`` / ``CROSSED``; False when it already was (``-4046``)."""
        try:
            await self._signed("POST", "/fapi/v1/marginType", {"symbol": symbol, "marginType": margin_type})
            return True
        except FuturesError as exc:
            if exc.code == -4046:
                return False
            raise

    async def market_order(self, symbol: str, side: str, quantity: str, *, client_order_id: str,
                           reduce_only: bool = False) -> dict:
        self.posts += 1
        return await self._signed("POST", "/fapi/v1/order", {
            "symbol": symbol, "side": side, "type": "MARKET", "quantity": quantity,
            "newClientOrderId": client_order_id, "reduceOnly": "true" if reduce_only else None,
            "newOrderRespType": "RESULT"})

    async def submit_market(self, symbol: str, side: str, quantity: str, *, client_order_id: str,
                            reduce_only: bool = False, settle_s: float | None = None) -> dict:
        """One MARKET order, never doubled (module docstring); returns the exchange's order."""
        try:
            return await self.market_order(symbol, side, quantity, client_order_id=client_order_id,
                                           reduce_only=reduce_only)
        except FuturesUnavailable:
            pass
        except FuturesError as exc:
            if exc.code != -4116:          # a duplicate id: the order exists -- look it up
                raise
        found = await self.query_order(symbol, client_order_id)
        if found is not None:
            return found
        await asyncio.sleep(self.recv_window / 1000 if settle_s is None else settle_s)
        found = await self.query_order(symbol, client_order_id)
        if found is not None:
            return found
        return await self.market_order(symbol, side, quantity, client_order_id=client_order_id,
                                       reduce_only=reduce_only)


__all__ = ["AUTH_CODES", "FuturesAuthError", "FuturesError", "FuturesUnavailable", "UsdmClient", "futures_filters"]
