"""A signed Binance USD-M futures client (the routes a futures paper trader needs): leverage,
MARKET orders with a client id and ``reduceOnly``, positions, the USDT balance and the
funding income. The base URL and keys come from the settings
(``BINANCE_FUTURES_TESTNET_API_URL`` -- the real futures testnet by default --
``BINANCE_FUTURES_TESTNET_API_KEY`` / ``_SECRET``); the tests run it against
:class:`S7.local.usdm.LocalUSDM`.

Not yet driven by the executor's loop (``S7/executor.py --market usdm`` is refused): USD-M
paper trading runs in the dry-run replay (:mod:`S7.futures_engine`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp

from S1.errors import UserError


class FuturesError(Exception):
    """An error answer of the futures API (``code``, ``msg``)."""

    def __init__(self, status: int, code: int | None, msg: str):
        super().__init__(f"HTTP {status} {code}: {msg}")
        self.status, self.code, self.msg = status, code, msg


class UsdmClient:
    """``async with UsdmClient(url, key, secret) as c: await c.market_order(...)``."""

    def __init__(self, base_url: str, api_key: str, api_secret: str, *, recv_window: int = 5000,
                 timeout: float = 10.0):
        if not api_key or not api_secret:
            raise UserError("no USD-M futures testnet keys",
                            "set BINANCE_FUTURES_TESTNET_API_KEY and BINANCE_FUTURES_TESTNET_API_SECRET in .env")
        self.base_url = base_url.rstrip("/")
        self._key, self._secret = api_key, api_secret
        self.recv_window = recv_window
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings=None) -> UsdmClient:
        from S1.settings import get_settings

        s = settings or get_settings()
        key = s.binance_futures_testnet_api_key
        secret = s.binance_futures_testnet_api_secret
        return cls(s.binance_futures_testnet_api_url, key.get_secret_value() if key else "",
                   secret.get_secret_value() if secret else "", timeout=s.http_timeout)

    async def __aenter__(self) -> UsdmClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session is not None:
            await self._session.close()

    async def _signed(self, method: str, path: str, params: dict[str, Any]) -> Any:
        q = {k: v for k, v in params.items() if v is not None}
        q.update(timestamp=int(time.time() * 1000), recvWindow=self.recv_window)
        query = urlencode(q)
        sig = hmac.new(self._secret.encode(), query.encode(), hashlib.sha256).hexdigest()
        url = f"{self.base_url}{path}?{query}&signature={sig}"
        async with self._session.request(method, url, headers={"X-MBX-APIKEY": self._key}) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 400:
                raise FuturesError(resp.status, data.get("code") if isinstance(data, dict) else None,
                                   data.get("msg", str(data)) if isinstance(data, dict) else str(data))
            return data

    async def set_leverage(self, symbol: str, leverage: int) -> dict:
        return await self._signed("POST", "/fapi/v1/leverage", {"symbol": symbol, "leverage": int(leverage)})

    async def market_order(self, symbol: str, side: str, quantity: str, *, client_order_id: str,
                           reduce_only: bool = False) -> dict:
        return await self._signed("POST", "/fapi/v1/order", {
            "symbol": symbol, "side": side, "type": "MARKET", "quantity": quantity,
            "newClientOrderId": client_order_id, "reduceOnly": "true" if reduce_only else None})

    async def position(self, symbol: str) -> dict | None:
        rows = await self._signed("GET", "/fapi/v2/positionRisk", {"symbol": symbol})
        return next((r for r in rows if r["symbol"] == symbol), None)

    async def usdt_balance(self) -> float:
        rows = await self._signed("GET", "/fapi/v2/balance", {})
        return float(next(r for r in rows if r["asset"] == "USDT")["balance"])

    async def funding_income(self, symbol: str | None = None) -> list[dict]:
        rows = await self._signed("GET", "/fapi/v1/income", {"incomeType": "FUNDING_FEE"})
        return [r for r in rows if symbol is None or r["symbol"] == symbol]


__all__ = ["FuturesError", "UsdmClient"]
