"""Binance USDⓈ-M futures market data on a :class:`S1.local.exchange.LocalBinance` (aiohttp).

The routes CCXT's ``binance`` class calls for ``--market swap|future`` and
``--price last|mark|index``, speaking the real protocol (fapi.binance.com):

- ``GET /fapi/v1/exchangeInfo`` -- ``futuresType: U_MARGINED``, ``assets``, and one
  entry per contract with the real fields (``pair``, ``contractType`` ``PERPETUAL`` /
  ``CURRENT_QUARTER``, ``deliveryDate`` -- 4133404800000 for perpetuals --, ``onboardDate``,
  ``marginAsset``, the PRICE_FILTER / LOT_SIZE / MARKET_LOT_SIZE / MAX_NUM_ORDERS /
  MAX_NUM_ALGO_ORDERS / MIN_NOTIONAL / PERCENT_PRICE filters);
- ``GET /fapi/v1/klines``, ``/fapi/v1/markPriceKlines`` (``symbol``) and
  ``/fapi/v1/indexPriceKlines`` (``pair``, not ``symbol``: -1102 otherwise) with
  ``startTime``/``endTime``/``limit`` (default 500, max 1,500: -1130 above), the candle in
  progress at the server clock served with partial values, -1121 / -1120 errors;
  mark and index candles carry ``"0"`` volumes and, at index 8, the number of
  basic data (1-second samples), as Binance documents them;
- ``GET /fapi/v1/time`` (``simulated: true`` added when the server simulates) and ``/fapi/v1/ping``;
- ``GET /fapi/v1/fundingRate``, ``/fapi/v1/premiumIndex`` and ``/futures/data/openInterestHist``
  (:mod:`S1.local.funding`: deterministic simulated funding, 8-hourly with a 4-hourly period);
- the fapi request weights (klines by ``limit``: 1 below 100, 2 below 500, 5 up to
  1,000, 10 above; 1 for the others) in ``X-MBX-USED-WEIGHT-1M``, counted by the
  server's weight limiter with its 429/418 + ``Retry-After``, and every fault of
  :meth:`LocalBinance.inject` (match e.g. ``path="markPriceKlines"``);
- ``GET /dapi/v1/exchangeInfo`` / ``time`` / ``ping``: the COIN-M listing (BTCUSD_PERP),
  because CCXT loads both lists for a derivatives market. COIN-M candles are not served;
- with :class:`LocalFuturesStream`, the USDⓈ-M market streams (``fstream``) under ``/fstream``:
  ``/fstream[/market|/public]/ws/<stream>`` and ``.../stream?streams=`` with ``SUBSCRIBE``,
  replaying the contracts' last-price series -- the rows the klines endpoint serves, the candle
  in progress with the same partial values -- on the clock of the REST routes
  (:class:`S1.local.stream.LocalStream`'s events, pings, drops and faults).

Simplification: the spot and futures weights share one counter (Binance keeps one per API).

The series are derived deterministically from one candle frame (real or simulated),
so tests can check every value (:func:`derive_series`): the index is the source
price -1 bp, the perpetual trades +4 bp over the source (mark +3 bp), a quarterly
contract at a basis decaying linearly to 0 at delivery (1 % 90 days out), prices
rounded to the tick, volumes to the lot step::

    from S1.local.exchange import LocalBinance
    from S1.local.futures import LocalFutures
    with LocalBinance(now_ms=to_ms("2023-05-31 12:30")) as server:
        fut = LocalFutures(server)
        frames = fut.add_pair("BTCUSDT", "1h", candles, quarterlies=("2023-06-30",))
        # BINANCE_API_URL=server.api_url: CCXT's fapi URLs follow (S1.ccxt_source.configure_urls)
        stream = LocalFuturesStream(fut, clock)   # BINANCE_WS_URL=stream.ws_url: CCXT's fstream follows
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from aiohttp import web

from S1.datasets import candles_from_arrays, candles_to_rows
from S1.intervals import INTERVALS, to_ms
from S1.local.exchange import LocalBinance, kline_window
from S1.local.stream import LocalStream, ReplayClock

#: ``deliveryDate`` Binance gives perpetual contracts (2100-12-25 08:00 UTC)
PERPETUAL_DELIVERY_MS = 4133404800000
FAPI_MAX_LIMIT = 1500
#: where ``wss://fstream.binance.com`` lives on a non-Binance ``BINANCE_WS_URL`` (S1.ccxt_source.configure_urls)
FSTREAM_PREFIX = "/fstream"
#: price offsets of the derived series against the source candles
INDEX_PREMIUM = -0.0001
PERP_PREMIUM = 0.0004
PERP_MARK_PREMIUM = 0.0003
#: a quarterly trades at this basis 90 days before delivery, falling linearly to 0 at delivery
QUARTER_BASIS_90D = 0.01
QUARTER_MARK_OFFSET = -0.0001
QUARTER_VOLUME_FACTOR = 0.04


def fapi_kline_weight(limit: int) -> int:
    """Request weight of the fapi kline endpoints for ``limit`` (Binance's table)."""
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


# ------------------------------------------------------------------ contracts
@dataclass(frozen=True)
class Contract:
    """One futures contract as listed in ``exchangeInfo``."""

    symbol: str                 # BTCUSDT, BTCUSDT_230630, BTCUSD_PERP
    pair: str                   # BTCUSDT, BTCUSD
    base: str
    quote: str
    margin: str                 # the settle asset: USDT (USDⓈ-M) or BTC (COIN-M)
    contract_type: str = "PERPETUAL"
    delivery_ms: int = PERPETUAL_DELIVERY_MS
    onboard_ms: int = 1569398400000  # 2019-09-25 08:00, BTCUSDT's listing
    tick: str = "0.10"
    step: str = "0.001"
    contract_size: int | None = None  # COIN-M only (USD per contract)

    def listing(self, now_ms: int) -> dict:
        status = "TRADING" if now_ms < self.delivery_ms else "SETTLING"
        filters = [
            {"filterType": "PRICE_FILTER", "minPrice": "556.80", "maxPrice": "4529764", "tickSize": self.tick},
            {"filterType": "LOT_SIZE", "minQty": self.step, "maxQty": "1000", "stepSize": self.step},
            {"filterType": "MARKET_LOT_SIZE", "minQty": self.step, "maxQty": "120", "stepSize": self.step},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
             "multiplierDecimal": "4"},
        ]
        out = {
            "symbol": self.symbol, "pair": self.pair, "contractType": self.contract_type,
            "deliveryDate": self.delivery_ms, "onboardDate": self.onboard_ms,
            "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
            "baseAsset": self.base, "quoteAsset": self.quote, "marginAsset": self.margin,
            "pricePrecision": max(0, len(self.tick.split(".")[1]) if "." in self.tick else 0),
            "quantityPrecision": len(self.step.split(".")[1]) if "." in self.step else 0,
            "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": ["PoW"],
            "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000, "filters": filters,
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                           "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }
        if self.contract_size is None:  # USDⓈ-M
            out["status"] = status
            out["settlePlan"] = 0
            filters.append({"filterType": "MIN_NOTIONAL", "notional": "100"})
        else:  # COIN-M
            out["contractStatus"] = status
            out["contractSize"] = self.contract_size
            out["equalQtyPrecision"] = 4
        return out


def perpetual(base: str = "BTC", quote: str = "USDT") -> Contract:
    return Contract(f"{base}{quote}", f"{base}{quote}", base, quote, quote)


def quarterly(base: str, quote: str, delivery, *, contract_type: str = "CURRENT_QUARTER") -> Contract:
    """A USDⓈ-M dated contract delivering at ``delivery`` (a date: 08:00 UTC that day),
    listed 182 days before (Binance lists a quarterly two quarters ahead)."""
    ts = pd.Timestamp(delivery, tz="UTC") if pd.Timestamp(delivery).tzinfo is None else pd.Timestamp(delivery)
    ts = ts.normalize() + pd.Timedelta(hours=8)
    return Contract(f"{base}{quote}_{ts:%y%m%d}", f"{base}{quote}", base, quote, quote, contract_type,
                    to_ms(ts), to_ms(ts - pd.Timedelta(days=182)))


COIN_M = (
    Contract("BTCUSD_PERP", "BTCUSD", "BTC", "USD", "BTC", onboard_ms=1596006000000, tick="0.1", step="1",
             contract_size=100),
)


# ---------------------------------------------------------------- derivation
def _round(x: np.ndarray, decimals: int) -> np.ndarray:
    """``x`` rounded to ``decimals``, each value the double nearest to its decimal (an integer
    divided by a power of ten is correctly rounded), so it survives the JSON text exactly."""
    scale = 10.0 ** decimals
    return np.rint(np.asarray(x, dtype=np.float64) * scale) / scale


def derive_series(src: pd.DataFrame, premium, *, volume_factor: float | None,
                  price_decimals: int = 1) -> pd.DataFrame:
    """A candle frame at ``src`` prices times ``1 + premium`` (a number, or an array with
    one premium per candle), rounded to ``price_decimals``.

    ``volume_factor``: the traded volumes scaled by it (rounded to 3 decimals -- the lot
    step -- and 4 for quote volumes; trades floored); ``None``: a mark/index series, with
    zero volumes and trades (the server sends the number of price samples where trades
    would be, as Binance does; a candle file holds 0 there).

    >>> src = pd.DataFrame({"open": [100.0], "high": [110.0], "low": [90.0], "close": [105.0],
    ...     "volume": [2.0], "close_time": [pd.Timestamp("2024-01-01 00:59:59.999", tz="UTC")],
    ...     "quote_volume": [210.0], "trades": [7], "taker_buy_base": [1.0], "taker_buy_quote": [105.0]},
    ...     index=pd.DatetimeIndex([pd.Timestamp("2024-01-01", tz="UTC")], name="open_time"))
    >>> derive_series(src, 0.001, volume_factor=None)[["close", "volume"]].iloc[0].tolist()
    [105.1, 0.0]
    """
    rows = candles_to_rows(src).copy()
    factor = 1.0 + np.broadcast_to(np.asarray(premium, dtype=np.float64), (len(rows),))
    for col in (1, 2, 3, 4):
        rows[:, col] = _round(rows[:, col] * factor, price_decimals)
    if volume_factor is None:
        rows[:, [5, 7, 8, 9, 10]] = 0.0
    else:
        rows[:, 5] = _round(rows[:, 5] * volume_factor, 3)
        rows[:, 9] = _round(rows[:, 9] * volume_factor, 3)
        rows[:, 7] = _round(rows[:, 7] * volume_factor * factor, 4)
        rows[:, 10] = _round(rows[:, 10] * volume_factor * factor, 4)
        rows[:, 8] = np.floor(rows[:, 8] * volume_factor)
    return candles_from_arrays(rows)


def quarter_basis(open_ms: np.ndarray, delivery_ms: int) -> np.ndarray:
    """The quarterly's premium over the source at each open time (linear decay to 0)."""
    left = np.clip((delivery_ms - np.asarray(open_ms, dtype=np.float64)) / (90 * 86_400_000), 0, None)
    return QUARTER_BASIS_90D * left


# -------------------------------------------------------------------- server
class LocalFutures:
    """The USDⓈ-M routes (and the COIN-M listing) on ``server.app``: create it before
    ``server.start()`` (aiohttp freezes the router when the app starts); series may be added later."""

    def __init__(self, server: LocalBinance, *, contracts: list[Contract] | None = None,
                 coin_m: tuple[Contract, ...] = COIN_M):
        self.server = server
        self.contracts: dict[str, Contract] = {c.symbol: c for c in (contracts or [])}
        self.coin_m = list(coin_m)
        #: (kind, key, interval) -> rows in the Binance kline layout; kind last/mark keyed by the
        #: contract symbol, index keyed by the pair
        self.series: dict[tuple[str, str, str], np.ndarray] = {}
        self._rendered: dict[tuple[str, str, str], list[str]] = {}
        app = server.app
        for prefix in ("/fapi/v1", "/dapi/v1"):
            app.router.add_get(f"{prefix}/ping", self._ping)
            app.router.add_get(f"{prefix}/time", self._time)
        app.router.add_get("/fapi/v1/exchangeInfo", self._fapi_info)
        app.router.add_get("/dapi/v1/exchangeInfo", self._dapi_info)
        app.router.add_get("/fapi/v1/klines", self._klines("last", "symbol"))
        app.router.add_get("/fapi/v1/markPriceKlines", self._klines("mark", "symbol"))
        app.router.add_get("/fapi/v1/indexPriceKlines", self._klines("index", "pair"))
        server.api_prefixes = tuple(dict.fromkeys((*server.api_prefixes, "/fapi/", "/dapi/")))
        server.weight_hooks.append(self._weight)
        from S1.local.funding import FundingRoutes

        #: ``/fapi/v1/fundingRate``, ``/fapi/v1/premiumIndex``, ``/futures/data/openInterestHist``
        self.funding = FundingRoutes(self)

    # ------------------------------------------------------------ data
    def add_contract(self, contract: Contract) -> None:
        self.contracts[contract.symbol] = contract

    def add(self, kind: str, key: str, interval: str, df: pd.DataFrame) -> None:
        """Serve ``df`` as the ``kind`` (last/mark/index) candles of ``key`` (contract symbol,
        or the pair for index candles)."""
        if kind not in ("last", "mark", "index"):
            raise ValueError(f"kind must be last, mark or index, not {kind!r}")
        rows = candles_to_rows(df)
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        self.series[(kind, key, interval)] = rows
        self._rendered.pop((kind, key, interval), None)  # rendered on first request

    def _render(self, k: tuple[str, str, str]) -> list[str]:
        if k not in self._rendered:
            self._rendered[k] = [self._json_row(k[0], r) for r in self.series[k]]
        return self._rendered[k]

    def add_pair(self, pair: str, interval: str, source: pd.DataFrame, *, quarterlies=(),
                 base: str | None = None, quote: str = "USDT") -> dict[tuple[str, str], pd.DataFrame]:
        """List the perpetual ``pair`` and a quarterly per delivery date in ``quarterlies``, and
        serve their series derived from ``source``; returns ``{(kind, key): frame}`` -- exactly
        the values served (``("index", "BTCUSDT")``, ``("last", "BTCUSDT_230630")``, ...)."""
        base = base or pair[: -len(quote)]
        out: dict[tuple[str, str], pd.DataFrame] = {}
        out[("index", pair)] = derive_series(source, INDEX_PREMIUM, volume_factor=None, price_decimals=2)
        perp = perpetual(base, quote)
        self.add_contract(perp)
        out[("last", perp.symbol)] = derive_series(source, PERP_PREMIUM, volume_factor=1.0)
        out[("mark", perp.symbol)] = derive_series(source, PERP_MARK_PREMIUM, volume_factor=None,
                                                   price_decimals=2)
        for i, delivery in enumerate(quarterlies):
            q = quarterly(base, quote, delivery, contract_type="CURRENT_QUARTER" if i == 0 else "NEXT_QUARTER")
            self.add_contract(q)
            listed = source[(source.index >= pd.Timestamp(q.onboard_ms, unit="ms", tz="UTC"))
                            & (source.index < pd.Timestamp(q.delivery_ms, unit="ms", tz="UTC"))]
            basis = quarter_basis(listed.index.as_unit("ms").asi8, q.delivery_ms)
            out[("last", q.symbol)] = derive_series(listed, basis, volume_factor=QUARTER_VOLUME_FACTOR)
            out[("mark", q.symbol)] = derive_series(listed, basis + QUARTER_MARK_OFFSET, volume_factor=None,
                                                    price_decimals=2)
        for (kind, key), df in out.items():
            self.add(kind, key, interval, df)
        return out

    @staticmethod
    def _json_row(kind: str, r: np.ndarray, samples: int | None = None) -> str:
        """One kline as Binance's JSON text. Mark / index: ``"0"`` volumes and, at index 8, the
        number of basic data (1-second price samples; ``samples`` for a candle in progress)."""
        head = f'[{int(r[0])},"{r[1]:.8f}","{r[2]:.8f}","{r[3]:.8f}","{r[4]:.8f}",'
        if kind == "last":
            return head + (f'"{r[5]:.8f}",{int(r[6])},"{r[7]:.8f}",{int(r[8])},"{r[9]:.8f}",'
                           f'"{r[10]:.8f}","0"]')
        n = int((r[6] + 1 - r[0]) // 1000) if samples is None else samples
        return head + f'"0",{int(r[6])},"0",{n},"0","0","0"]'

    def stream_rows(self, symbol: str, interval: str) -> np.ndarray | None:
        """The last-price rows a ``<symbol>@kline_<interval>`` stream replays (None: not served)."""
        return self.series.get(("last", symbol.upper(), interval))

    # ------------------------------------------------------------ plumbing
    def _weight(self, path: str, params: dict) -> int | None:
        if not path.startswith(("/fapi/", "/dapi/")):
            return None
        if path.endswith(("Klines", "/klines")):
            try:
                return fapi_kline_weight(int(params.get("limit", 500)))
            except ValueError:
                return 1
        return 1

    @staticmethod
    def _error(status: int, code: int, msg: str) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

    # ------------------------------------------------------------ routes
    async def _ping(self, request):
        return web.json_response({})

    async def _time(self, request):
        # a simulated market (or simulated funding) is labelled by the server itself, as /api/v3/time does
        sim = self.server.simulate or self.funding.simulated
        return web.json_response({"serverTime": self.server.now_ms(), **({"simulated": True} if sim else {})})

    def _rate_limits(self) -> list[dict]:
        return [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": self.server.weight_limit},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ]

    async def _fapi_info(self, request):
        now = self.server.now_ms()
        return web.json_response({
            "timezone": "UTC", "serverTime": now, "futuresType": "U_MARGINED", "rateLimits": self._rate_limits(),
            "exchangeFilters": [],
            "assets": [{"asset": a, "marginAvailable": True, "autoAssetExchange": "-10000" if a == "USDT" else "0"}
                       for a in ("USDT", "BTC", "BNB", "USDC")],
            "symbols": [c.listing(now) for c in self.contracts.values()],
        })

    async def _dapi_info(self, request):
        now = self.server.now_ms()
        return web.json_response({
            "timezone": "UTC", "serverTime": now, "rateLimits": self._rate_limits(), "exchangeFilters": [],
            "symbols": [c.listing(now) for c in self.coin_m],
        })

    def _klines(self, kind: str, key_param: str):
        async def handler(request):
            q = request.query
            key, interval = q.get(key_param), q.get("interval")
            if not key:
                return self._error(400, -1102, f"Mandatory parameter '{key_param}' was not sent, was empty/null, "
                                               "or malformed.")
            if not interval:
                return self._error(400, -1102, "Mandatory parameter 'interval' was not sent, was empty/null, "
                                               "or malformed.")
            if interval not in INTERVALS or interval == "1s":
                return self._error(400, -1120, "Invalid interval.")
            known = {c.pair for c in self.contracts.values()} if kind == "index" else set(self.contracts)
            if key not in known:
                return self._error(400, -1121, "Invalid symbol.")
            try:
                limit = int(q.get("limit", 500))
                start = int(q["startTime"]) if "startTime" in q else None
                end = int(q["endTime"]) if "endTime" in q else None
            except ValueError:
                return self._error(400, -1100, "Illegal characters found in a parameter.")
            if not 1 <= limit <= FAPI_MAX_LIMIT:
                return self._error(400, -1130, "Data sent for parameter 'limit' is not valid.")
            if start is not None and end is not None and start > end:
                return self._error(400, -1023, "Start time is greater than end time.")
            rows = self.series.get((kind, key, interval))
            if rows is None or len(rows) == 0:
                return web.json_response([])
            now = self.server.now_ms()
            lo, hi = kline_window(rows, now, start, end, limit)
            parts = self._render((kind, key, interval))[lo:hi]
            if hi > lo and rows[hi - 1, 6] >= now:  # the candle in progress: partial values
                partial = LocalBinance.partial_candle(rows[hi - 1], interval, now)
                parts = parts[:-1] + [self._json_row(kind, partial, math.floor((now - rows[hi - 1, 0]) / 1000))]
            return web.Response(text="[" + ",".join(parts) + "]", content_type="application/json")
        return handler


# -------------------------------------------------------------------- streams
class LocalFuturesStream(LocalStream):
    """The USDⓈ-M market streams of ``futures`` (a :class:`LocalStream` replaying the contracts'
    last-price series) under ``/fstream``: ``/fstream/ws``, ``/fstream/market/ws`` (where ccxt.pro
    opens kline and aggTrade streams), ``/fstream/public/ws`` (trades), and the ``/stream`` combined
    form of each. Create it before ``server.start()``; ``ws_url`` is the value for ``BINANCE_WS_URL``.
    A spot :class:`LocalStream` may share the server (its ``/ws`` and ``/stream`` replay spot candles).

    >>> clock = ReplayClock(start_ms=to_ms("2023-05-31"), speed=600)                # doctest: +SKIP
    >>> server = LocalBinance(now_ms=clock.now_ms); fut = LocalFutures(server)      # doctest: +SKIP
    >>> stream = LocalFuturesStream(fut, clock, updates_per_candle=2)              # doctest: +SKIP
    """

    def __init__(self, futures: LocalFutures, clock: ReplayClock | None = None, **kw):
        p = FSTREAM_PREFIX
        super().__init__(futures.server, clock, rows_for=futures.stream_rows,
                         prefixes=(p, f"{p}/market", f"{p}/public"), **kw)
        self.futures = futures

    def refuse(self, count: int = 1, *, status: int = 503) -> None:
        """Answer the next ``count`` futures stream handshakes with HTTP ``status``."""
        self.exchange.inject("status", path=f"{FSTREAM_PREFIX}/", count=count, status=status)
