"""Kline history from any exchange CCXT knows, with the guarantees of the Binance path.

``python S1/historical.py --exchange okx --symbol BTC/USDT --interval 1h --days 30``
comes here (Binance spot stays on python-binance, :mod:`S1.rest_client`). The
file name and schema are the ones S2-S7 read; the venue goes into the name only
when it is not Binance spot last-price (:attr:`Venue.token`)::

    okx_btcusdt_1h_30d.parquet             --exchange okx
    okx-swap_btcusdt_1h_30d.parquet        --exchange okx --market swap
    okx-swap-mark_btcusdt_1h_30d.parquet   --exchange okx --market swap --price mark
    binance-swap_btcusdt_1h_30d.parquet    --exchange binance --market swap

What CCXT gives and what we add:

- **Rate limits**: CCXT's own limiter (``enableRateLimit``, per-endpoint costs).
  On top, a 429/418 ``Retry-After`` read from every response (a subclass hook on
  ``handle_errors``) closes a gate that *every* request waits for, as on the Binance path.
- **Exact paging**: the window is cut into pages of at most the exchange's
  ``features[...]['fetchOHLCV']['limit']`` candles, each asked with ``since`` and
  ``until``; a page that comes back short of its end (an exchange that caps lower
  than CCXT thinks) continues from its last candle until the exchange has nothing more.
- **Full candles**: CCXT's unified OHLCV is six numbers. A subclass hook on
  ``parse_ohlcv`` keeps the raw extras where the exchange sends them (Binance: close
  time, quote volume, trades, taker volumes; OKX: quote volume and the ``confirm``
  flag). Columns an exchange does not report are NaN (``trades``: 0, int64 has no
  NaN) and listed in the file metadata under ``unreported_columns``.
- **Closed candles only**: the window ends at the exchange's clock (``fetch_time``)
  by default; a candle is kept when its whole span lies before the end, and a
  candle the exchange itself flags unconfirmed (OKX ``confirm = 0``) is dropped and
  ends the recorded coverage, so a re-run fetches it once it is final.
- **Bounded retries** with exponential backoff and jitter (tenacity) on network
  errors, 5xx, timeouts, dropped connections and truncated bodies.
- **One clear line** for an unknown exchange, symbol, market type, price type or
  interval (with close matches).

Base URLs come from settings: Binance through ``BINANCE_API_URL`` (so CCXT's
Binance class runs against :mod:`S1.local.exchange` in tests; when it is not a Binance
host the futures APIs -- ``/fapi``, ``/dapi`` -- move onto the same server, as
:mod:`S1.local.futures` serves them), any other exchange through ``CCXT_API_URLS``
(``okx=http://127.0.0.1:8000,bybit=...``).

>>> Venue("okx", "swap", "mark").token
'okx-swap-mark'
>>> Venue().token is None, Venue("binance", "swap").token
(True, 'binance-swap')
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from S1.datasets import candles_from_arrays, empty_candles, normalize_symbol
from S1.errors import NetworkError, UserError
from S1.intervals import INTERVALS, check_interval, close_time_ms, next_open_ms, open_times
from S1.settings import Settings, get_settings

log = logging.getLogger(__name__)

MARKETS = ("spot", "swap", "future")
PRICES = ("last", "mark", "index")
CLIENTS = ("auto", "ccxt")
#: Width of a rich row: the 11 Binance kline fields + the exchange's "closed" flag (1, 0 or NaN).
ROW_WIDTH = 12
#: Candle columns an exchange may not report (filled NaN, trades 0).
OPTIONAL_COLUMNS = ("quote_volume", "trades", "taker_buy_base", "taker_buy_quote")
#: Longest Retry-After we wait out before reporting it (s), as on the Binance path.
MAX_BAN_WAIT = 150.0
MAX_PAGE = 1000
#: candles per Binance fapi/dapi kline request: the largest page of the cheaper weight step (2)
BINANCE_DERIVATIVES_PAGE = 499
_BINANCE_SPOT_REST = "https://api.binance.com/api"
_BINANCE_SPOT_WS = "wss://stream.binance.com:9443"


# ------------------------------------------------------------------------- venue
@dataclass(frozen=True)
class Venue:
    """Which exchange, market type and price series a dataset comes from."""

    exchange: str = "binance"
    market: str = "spot"
    price: str = "last"

    def __post_init__(self):
        object.__setattr__(self, "exchange", str(self.exchange or "binance").strip().lower())
        if self.market not in MARKETS:
            raise UserError(f"unknown --market {self.market!r}", f"use one of {', '.join(MARKETS)}")
        if self.price not in PRICES:
            raise UserError(f"unknown --price {self.price!r}", f"use one of {', '.join(PRICES)}")
        if self.price != "last" and self.market == "spot":
            raise UserError(f"--price {self.price} exists only for derivatives",
                            "add --market swap (perpetuals) or --market future, or use --price last")
        if not re.fullmatch(r"[a-z0-9]+", self.exchange):
            raise UserError(f"invalid --exchange {self.exchange!r}", "pass a CCXT exchange id such as okx or bybit")

    @property
    def is_binance_spot(self) -> bool:
        return self.exchange == "binance" and self.market == "spot" and self.price == "last"

    @property
    def token(self) -> str | None:
        """The file-name prefix (``None`` for Binance spot last-price: no prefix)."""
        if self.is_binance_spot:
            return None
        parts = [self.exchange] + ([self.market] if self.market != "spot" else []) + \
                ([self.price] if self.price != "last" else [])
        return "-".join(parts)

    def uses_ccxt(self, client: str = "auto") -> bool:
        if client not in CLIENTS:
            raise UserError(f"unknown --client {client!r}", f"use one of {', '.join(CLIENTS)}")
        return client == "ccxt" or not self.is_binance_spot

    def label(self) -> str:
        return self.token or "binance"


# ------------------------------------------------------------------- exchanges
def _ccxt_modules():
    import ccxt
    import ccxt.async_support as ccxt_async

    return ccxt, ccxt_async


def check_exchange_id(exchange_id: str) -> str:
    """``exchange_id`` if CCXT knows it, else a :class:`UserError` with close matches."""
    ccxt, _ = _ccxt_modules()
    if exchange_id in ccxt.exchanges:
        return exchange_id
    near = difflib.get_close_matches(exchange_id, ccxt.exchanges, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    raise UserError(f"unknown exchange {exchange_id!r}",
                    f"{hint}pass a CCXT exchange id ({len(ccxt.exchanges)} known, e.g. binance, okx, bybit, kraken)")


@dataclass
class BackoffGate:
    """The Retry-After window shared by every request of one exchange instance."""

    clock: Callable[[], float] = time.monotonic
    blocked_until: float = 0.0
    bans: int = 0
    waits: int = 0

    def block(self, seconds: float) -> None:
        self.bans += 1
        self.blocked_until = max(self.blocked_until, self.clock() + max(0.0, seconds))

    async def wait(self, exchange_id: str) -> None:
        while (left := self.blocked_until - self.clock()) > 0:
            if left > MAX_BAN_WAIT:
                raise NetworkError(f"{exchange_id} asked us to back off for {left:.0f}s (HTTP 429/418 Retry-After)",
                                   "wait that long before re-running; the existing file is untouched")
            self.waits += 1
            log.warning("rate limited: waiting %.1fs as %s asked (Retry-After)", left, exchange_id)
            await asyncio.sleep(left)


def _retry_after(headers: dict | None) -> float:
    for k, v in (headers or {}).items():
        if k.lower() == "retry-after":
            try:
                return max(0.0, float(v))
            except (TypeError, ValueError):
                return 1.0
    return 1.0


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def rich_row(exchange_id: str, raw: Any, market: dict | None, unified: Callable[[Any, Any], list],
             price: str = "last") -> list:
    """One raw OHLCV entry -> ``[t, o, h, l, c, v, close_t, quote_v, trades, taker_b, taker_q, closed]``
    (the Binance kline layout plus the exchange's "closed" flag; NaN where unknown).

    ``price``: the series the entry belongs to; Binance mark/index klines send ``"0"``
    volumes and, where trades would be, the number of price samples: ``trades`` is 0 there."""
    nan = float("nan")
    contract = bool(market and market.get("contract"))
    if exchange_id.startswith("binance") and isinstance(raw, (list, tuple)) and len(raw) >= 11:
        row = [_num(raw[i]) for i in range(11)] + [nan]
        if price != "last":
            row[8] = 0.0
        return row
    if exchange_id.startswith("okx") and isinstance(raw, (list, tuple)):
        if len(raw) >= 9:  # ts o h l c vol volCcy volCcyQuote confirm
            base = _num(raw[6] if contract else raw[5])
            return [_num(raw[i]) for i in range(5)] + [base, nan, _num(raw[7]), nan, nan, nan, _num(raw[8])]
        if len(raw) == 6:  # mark / index candles: ts o h l c confirm -- no traded volume
            return [_num(raw[i]) for i in range(5)] + [0.0, nan, 0.0, 0.0, 0.0, 0.0, _num(raw[5])]
    u = unified(raw, market)
    return [_num(u[i]) if i < len(u) else nan for i in range(6)] + [nan] * 6


def _rich_class(base: type, extra: Callable[[type], dict] | None = None) -> type:
    """A subclass of a CCXT exchange class that keeps full candles and reads Retry-After
    (``extra(cls)`` may add methods, e.g. websocket taps in :mod:`S1.ccxt_stream`)."""

    def parse_ohlcv(self, ohlcv, market=None):
        return rich_row(self.id, ohlcv, market, super(cls, self).parse_ohlcv,
                        price=getattr(self, "toolkit_price", "last"))

    def handle_errors(self, code, reason, url, method, headers, body, response, request_headers, request_body):
        if code in (418, 429) and getattr(self, "toolkit_gate", None) is not None:
            self.toolkit_gate.block(_retry_after(headers))
        return super(cls, self).handle_errors(code, reason, url, method, headers, body, response,
                                              request_headers, request_body)

    cls = type(base.__name__, (base,), {"parse_ohlcv": parse_ohlcv, "handle_errors": handle_errors,
                                        "__module__": __name__})
    for name, fn in (extra(cls) if extra else {}).items():
        setattr(cls, name, fn)
    return cls


def url_overrides(settings: Settings, key: str = "ccxt_api_urls") -> dict[str, str]:
    """``{exchange_id: base_url}`` from ``CCXT_API_URLS`` (``okx=http://127.0.0.1:8000,...``)."""
    raw = getattr(settings, key)
    out = {}
    for item in filter(None, (p.strip() for p in str(raw).split(","))):
        name, _, url = item.partition("=")
        if not url:
            raise UserError(f"{key.upper()} entry {item!r} is not name=url",
                            "write e.g. CCXT_API_URLS=okx=http://127.0.0.1:8000")
        out[name.strip().lower()] = url.strip().rstrip("/")
    return out


def _rebase(tree, new_base: str, hostname: str | None, only_prefix: str | None = None):
    """Every URL string in ``tree`` (CCXT's ``urls['api']``) moved onto ``new_base``."""
    if isinstance(tree, dict):
        return {k: _rebase(v, new_base, hostname, only_prefix) for k, v in tree.items()}
    if not isinstance(tree, str):
        return tree
    url = tree.replace("{hostname}", hostname or "")
    if only_prefix is not None:
        return new_base + url[len(only_prefix):] if url.startswith(only_prefix) else tree
    return new_base + urlsplit(url).path


_BINANCE_HOSTS = ("binance.com", "binance.vision", "binancefuture.com", "binance.us")


def _is_binance_host(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in _BINANCE_HOSTS)


def _origin_root(url: str) -> str:
    """``http://127.0.0.1:8765/api`` -> ``http://127.0.0.1:8765`` (the path before ``/api`` is kept)."""
    parts = urlsplit(url.rstrip("/"))
    path = parts.path[: -len("/api")] if parts.path.endswith("/api") else ""
    return f"{parts.scheme}://{parts.netloc}{path}"


def _already(tree, base: str) -> bool:
    """True when every URL in ``tree`` is already on ``base`` (the spot URLs just moved)."""
    if isinstance(tree, dict):
        return all(_already(v, base) for v in tree.values())
    return not isinstance(tree, str) or tree.startswith(base)


def _rebase_ws_hosts(tree, base: str):
    """Binance websocket URLs not yet on ``base`` moved under it, prefixed by their host's first label
    unless the path already starts with it (``wss://fstream.binance.com/ws`` -> ``<base>/fstream/ws``,
    ``wss://ws-api.binance.com:443/ws-api/v3`` -> ``<base>/ws-api/v3``): the futures hosts reuse
    spot's paths (``dstream.../ws`` is spot's ``/ws``), the label keeps each stream apart on one server."""
    if isinstance(tree, dict):
        return {k: _rebase_ws_hosts(v, base) for k, v in tree.items()}
    if not isinstance(tree, str) or tree == base or tree.startswith(base + "/"):
        return tree
    parts = urlsplit(tree)
    label = "/" + (parts.hostname or "").split(".")[0]
    path = parts.path if parts.path == label or parts.path.startswith(label + "/") else label + parts.path
    return base + path + (f"?{parts.query}" if parts.query else "")


def configure_urls(ex, settings: Settings, *, ws: bool = False) -> str:
    """Point a CCXT instance at the configured base URLs; returns the REST base shown in messages.

    Binance websockets (``ws``): spot streams on ``BINANCE_WS_URL``; while it is a Binance host the
    futures streams stay on Binance (``wss://fstream.binance.com/...``), otherwise (a local server, a
    relay) they move onto it under their host's label: CCXT then opens USDⓈ-M klines on
    ``<BINANCE_WS_URL>/fstream/market/ws/<n>`` (as :class:`S1.local.futures.LocalFuturesStream` serves
    them), COIN-M on ``<BINANCE_WS_URL>/dstream/ws/<n>``. ``CCXT_WS_URLS=binance=...`` overrides all."""
    overrides = url_overrides(settings)
    api = ex.urls.get("api", {})
    shown = None
    if ex.id in overrides:
        api = _rebase(api, overrides[ex.id], getattr(ex, "hostname", None))
        shown = overrides[ex.id]
    elif ex.id == "binance":
        api = _rebase(api, settings.binance_api_url, None, only_prefix=_BINANCE_SPOT_REST)
        if not _is_binance_host(settings.binance_api_url):
            # a local server or proxy: the futures APIs (fapi/dapi/eapi/papi, sapi) live on the same
            # host, under their own paths (/fapi/v1, /dapi/v1, ...), as S1.local.futures serves them
            root = _origin_root(settings.binance_api_url)
            for key, urls in list(api.items()):
                if key != "ws" and not _already(urls, settings.binance_api_url):
                    api[key] = _rebase(urls, root, None)
        if ws and isinstance(api.get("ws"), dict):
            api["ws"] = _rebase(api["ws"], settings.binance_ws_url, None, only_prefix=_BINANCE_SPOT_WS)
            if not _is_binance_host(settings.binance_ws_url):
                api["ws"] = _rebase_ws_hosts(api["ws"], settings.binance_ws_url)
        shown = settings.binance_api_url
    if ws:
        ws_over = url_overrides(settings, "ccxt_ws_urls")
        if ex.id in ws_over and "ws" in api:
            api["ws"] = _rebase(api["ws"], ws_over[ex.id], getattr(ex, "hostname", None))
    ex.urls["api"] = api
    if shown is None:
        rest = api.get("rest") or api.get("public") or next((v for v in api.values() if isinstance(v, str)), "")
        shown = str(rest).replace("{hostname}", getattr(ex, "hostname", "") or "")
    return settings.redact(shown)


def _fetch_market_types(exchange_id: str, market: str) -> list[str] | None:
    if exchange_id == "binance":
        return {"spot": ["spot"], "swap": ["linear", "inverse"], "future": ["linear", "inverse"]}[market]
    if exchange_id == "okx":
        return [market]
    return None  # other exchanges: CCXT's defaults


def make_exchange(venue: Venue, settings: Settings | None = None, *, pro: bool = False,
                  extra: Callable[[type], dict] | None = None):
    """A configured async CCXT instance (rich subclass, rate limiter on, URLs from settings;
    ``pro``: the ccxt.pro class, with websockets)."""
    settings = settings or get_settings()
    check_exchange_id(venue.exchange)
    if pro:
        import ccxt.pro as module
    else:
        _, module = _ccxt_modules()
    base = getattr(module, venue.exchange, None)
    if base is None:
        raise UserError(f"CCXT has no {'websocket' if pro else 'async'} support for {venue.exchange}",
                        "pick another exchange")
    options: dict[str, Any] = {"fetchCurrencies": False}
    types = _fetch_market_types(venue.exchange, venue.market)
    if types:
        options["fetchMarkets"] = {"types": types}
    ex = _rich_class(base, extra)({"enableRateLimit": True, "timeout": int(settings.http_timeout * 1000),
                            "options": options})
    ex.toolkit_gate = BackoffGate()
    ex.toolkit_price = venue.price
    ex.toolkit_url = configure_urls(ex, settings, ws=pro)
    return ex


# ---------------------------------------------------------------------- markets
def file_symbol(market: dict) -> str:
    """The symbol in file names: base + quote (+ expiry for dated futures), e.g. ``BTCUSDT``."""
    expiry = ""
    if market.get("type") == "future" and market.get("expiry"):
        expiry = pd.Timestamp(int(market["expiry"]), unit="ms", tz="UTC").strftime("%y%m%d")
    return normalize_symbol(f"{market['base']}{market['quote']}{expiry}")


def resolve_market(markets: dict[str, dict], symbol: str, venue: Venue) -> dict:
    """The CCXT market of ``symbol`` on ``venue.market``: accepts the unified symbol
    (``BTC/USDT``, ``BTC/USDT:USDT``), the exchange's id (``BTC-USDT-SWAP``) or base+quote
    (``BTCUSDT``). Unknown symbols raise a :class:`UserError` with close matches."""
    s = str(symbol).strip()
    if not s:
        raise UserError("empty --symbol", "pass e.g. --symbol BTC/USDT")
    kind = venue.market
    typed = [m for m in markets.values() if m and m.get("type") == kind and m.get("active", True) is not False]
    if not typed:
        typed = [m for m in markets.values() if m and m.get("type") == kind]
    up = s.upper()
    compact = re.sub(r"[^A-Z0-9]", "", up)
    exact = [m for m in typed if up in (str(m["symbol"]).upper(), str(m["id"]).upper())]
    if not exact:
        head = up.split(":")[0]
        exact = [m for m in typed if f"{m['base']}/{m['quote']}".upper() == head
                 or f"{m['base']}{m['quote']}".upper() == compact]
    if len(exact) > 1 and kind == "swap":  # BTC/USDT on swaps: the linear (USDT-settled) contract
        linear = [m for m in exact if m.get("settle") == m.get("quote")]
        exact = linear or exact
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        names = sorted(m["symbol"] for m in exact)
        raise UserError(f"{symbol!r} matches {len(names)} {kind} markets on {venue.exchange}",
                        f"pass one of {', '.join(names[:6])}")
    elsewhere = sorted({m["type"] for m in markets.values() if m and (
        up in (str(m["symbol"]).upper(), str(m["id"]).upper())
        or f"{m['base']}{m['quote']}".upper() == compact)})
    if elsewhere:
        raise UserError(f"{symbol!r} is not a {kind} market on {venue.exchange}",
                        f"it exists as {', '.join(elsewhere)}: pass --market {elsewhere[0]}")
    names = {re.sub(r"[^A-Z0-9]", "", str(m["symbol"]).upper()): m["symbol"] for m in typed}
    near = [names[n] for n in difflib.get_close_matches(compact, list(names), n=4, cutoff=0.6)]
    raise UserError(f"unknown symbol {symbol!r} on {venue.exchange} ({kind})",
                    f"did you mean {', '.join(near)}?" if near else
                    f"{len(typed)} {kind} markets are listed, e.g. {', '.join(sorted(names.values())[:3])}")


def page_limit(ex, market: dict, price: str) -> int:
    """Candles per request: CCXT's ``features`` for this market type and price (capped at 1,000;
    499 for Binance futures, the cheaper request weight)."""
    feats = (getattr(ex, "features", None) or {}).get(market.get("type"), {}) or {}
    if market.get("type") in ("swap", "future"):
        feats = feats.get("linear" if market.get("linear", True) else "inverse") or feats
    ohlcv = (feats or {}).get("fetchOHLCV") or {}
    limit = ohlcv.get(price) if price != "last" else None
    limit = limit or ohlcv.get("limit") or 100
    if getattr(ex, "id", "") == "binance" and market.get("contract"):
        # fapi/dapi kline weight is 2 below 500 candles and 5 from 500 (CCXT's byLimit costs
        # too): 499-candle pages cost 2.5x less weight and limiter time than CCXT's 500
        limit = min(limit, BINANCE_DERIVATIVES_PAGE)
    return int(max(1, min(MAX_PAGE, limit)))


def page_windows(start_ms: int, end_ms: int, interval: str, limit: int) -> list[tuple[int, int]]:
    """``[a, b)`` windows of at most ``limit`` candles covering ``[start_ms, end_ms)`` exactly."""
    if end_ms <= start_ms:
        return []
    opens = open_times(start_ms, next_open_ms(end_ms, interval) if interval != "1M" else end_ms + 31 * 86_400_000,
                       interval)
    opens = opens[opens < end_ms]
    if len(opens) == 0:
        return [(start_ms, end_ms)]
    firsts = opens[::limit]
    bounds = list(firsts[1:]) + [end_ms]
    return [(int(start_ms if i == 0 else a), int(b)) for i, (a, b) in enumerate(zip(firsts, bounds))]


# ------------------------------------------------------------------------ client
def _retryable(exc: BaseException) -> bool:
    import aiohttp
    import ccxt

    if isinstance(exc, (ccxt.NetworkError, asyncio.TimeoutError, aiohttp.ClientError, ConnectionError)):
        return True
    if isinstance(exc, ccxt.ExchangeError) and isinstance(exc.__cause__, aiohttp.ClientError):
        return True  # truncated body, payload error
    return False


@dataclass
class CcxtStats:
    requests: int = 0
    retries: int = 0
    continuations: int = 0
    unconfirmed: int = 0
    notes: list[str] = field(default_factory=list)


class CcxtHistory:
    """One exchange instance, its markets loaded and one market resolved (``async with``).

    >>> async def demo():                                             # doctest: +SKIP
    ...     async with CcxtHistory(Venue("okx"), "BTC/USDT", "1h") as h:
    ...         rows = await h.fetch_range(h.start_for(days=3), await h.server_time())
    """

    def __init__(self, venue: Venue, symbol: str, interval: str, *, settings: Settings | None = None,
                 max_in_flight: int = 4, progress: Callable[[int], None] | None = None, exchange=None):
        self.venue, self.symbol_in, self.interval = venue, symbol, check_interval(interval)
        self.settings = settings or get_settings()
        self.max_in_flight = max(1, int(max_in_flight))
        self.progress = progress
        self.stats = CcxtStats()
        self.ex = exchange
        self._own = exchange is None
        self.market: dict = {}
        self.limit = 0
        self._sem: asyncio.Semaphore | None = None

    async def __aenter__(self) -> "CcxtHistory":
        if self.ex is None:
            self.ex = make_exchange(self.venue, self.settings)
        try:
            await self.call("load markets", self.ex.load_markets)
            self.market = resolve_market(self.ex.markets, self.symbol_in, self.venue)
            tf = getattr(self.ex, "timeframes", None) or {}
            if self.interval not in tf:
                ok = [i for i in INTERVALS if i in tf]
                raise UserError(f"{self.venue.exchange} has no {self.interval} candles",
                                f"use one of {', '.join(ok) or 'the intervals CCXT lists for it'}")
            if not self.ex.has.get("fetchOHLCV"):
                raise UserError(f"{self.venue.exchange} offers no candle history through CCXT",
                                "pick another exchange")
            self.limit = page_limit(self.ex, self.market, self.venue.price)
            self._sem = asyncio.Semaphore(self.max_in_flight)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own and self.ex is not None:
            self.ex.timeout_on_exit = 0
            await self.ex.close()

    @property
    def file_symbol(self) -> str:
        return file_symbol(self.market)

    # ------------------------------------------------------------ requests
    async def call(self, what: str, fn, *args, **kwargs):
        """``fn(*args)`` with the Retry-After gate, bounded retries and one-line errors."""
        import ccxt
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

        gate: BackoffGate = self.ex.toolkit_gate
        attempt_no = 0
        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(self.settings.http_max_retries + 1),
                                               wait=wait_exponential_jitter(multiplier=0.2, max=10.0, jitter=0.2),
                                               retry=retry_if_exception(_retryable), reraise=True):
                with attempt:
                    attempt_no += 1
                    if attempt_no > 1:
                        self.stats.retries += 1
                    await gate.wait(self.venue.exchange)
                    self.stats.requests += 1
                    return await fn(*args, **kwargs)
        except UserError:
            raise
        except ccxt.BadSymbol as exc:
            raise UserError(f"unknown symbol {self.symbol_in!r} on {self.venue.exchange}",
                            "check the spelling (CCXT symbols look like BTC/USDT)") from exc
        except (ccxt.NotSupported, ccxt.BadRequest, ccxt.AuthenticationError, ccxt.PermissionDenied) as exc:
            raise UserError(f"{self.venue.exchange} rejected {what}: {_short(exc)}",
                            "check --symbol, --interval, --market and --price") from exc
        except Exception as exc:
            if _retryable(exc):
                raise NetworkError(f"cannot reach {self.source_url} ({what}: {_short(exc) or type(exc).__name__})"
                                   f" after {attempt_no} attempts",
                                   "check your connection or CCXT_API_URLS/BINANCE_API_URL in .env, or run it "
                                   "with --offline on the local simulated market; nothing was written") from exc
            if isinstance(exc, ccxt.BaseError):
                raise UserError(f"{self.venue.exchange} error during {what}: {_short(exc)}",
                                "check the arguments; nothing was written") from exc
            raise

    @property
    def source_url(self) -> str:
        """The REST base the candles come from (Binance derivatives: the fapi/dapi base), redacted."""
        if self.venue.exchange == "binance" and self.market.get("contract"):
            key = "fapiPublic" if self.market.get("linear", True) else "dapiPublic"
            url = (self.ex.urls.get("api") or {}).get(key)
            if isinstance(url, str):
                return self.settings.redact(url)
        return self.ex.toolkit_url

    async def server_time(self) -> int:
        """The exchange's clock in ms (our own when it has no time endpoint); Binance
        derivatives read the futures API's clock (``/fapi/v1/time``, ``/dapi/v1/time``)."""
        if self.venue.exchange == "binance" and self.market.get("contract"):
            fn = self.ex.fapiPublicGetTime if self.market.get("linear", True) else self.ex.dapiPublicGetTime
            return int((await self.call("server time", fn))["serverTime"])
        if self.ex.has.get("fetchTime"):
            try:
                return int(await self.call("server time", self.ex.fetch_time))
            except NetworkError:
                raise
            except UserError:
                pass
        return int(time.time() * 1000)

    def _params(self) -> dict:
        return {"price": self.venue.price} if self.venue.price != "last" else {}

    async def _page(self, a: int, b: int) -> list[list]:
        """Rich rows with open time in ``[a, b)``. A page that comes back short is continued
        on the side(s) it did not reach: exchanges that cap lower than asked return either
        the oldest candles (Binance-like) or the newest (OKX-like) of the window."""
        out: list[list] = []
        todo = [(a, b)]
        first = True
        while todo:
            lo, hi = todo.pop()
            n = self.limit
            if self.interval != "1M":
                n = int(min(self.limit, max(1, -(-(hi - lo) // next_open_ms(0, self.interval)))))
            assert self._sem is not None
            async with self._sem:
                got = await self.call("candles", self.ex.fetch_ohlcv, self.market["symbol"], self.interval,
                                      lo, n, {**self._params(), "until": hi - 1})
            if first and self.progress:
                self.progress(1)
            elif not first:
                self.stats.continuations += 1
            first = False
            got = [r for r in got if lo <= r[0] < hi]
            out += got
            if not got or len(got) >= n:
                continue
            oldest, newest = min(r[0] for r in got), max(r[0] for r in got)
            if oldest > lo:
                todo.append((lo, int(oldest)))
            if (nxt := next_open_ms(int(newest), self.interval)) < hi:
                todo.append((nxt, hi))
        return out

    async def fetch_range(self, start_ms: int, end_ms: int) -> np.ndarray:
        """Rich rows (``ROW_WIDTH`` columns) with ``start_ms <= open < end_ms``, sorted, unique,
        in-progress candles *not* removed (see :func:`closed_rows`)."""
        windows = page_windows(start_ms, end_ms, self.interval, self.limit)
        parts = await asyncio.gather(*(self._page(a, b) for a, b in windows))
        rows = [r for p in parts for r in p]
        if not rows:
            return np.empty((0, ROW_WIDTH))
        arr = np.asarray(rows, dtype=np.float64).reshape(len(rows), ROW_WIDTH)
        arr = arr[np.argsort(arr[:, 0], kind="stable")]
        return arr[np.r_[True, np.diff(arr[:, 0]) > 0]]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (text[:200] + "...") if len(text) > 200 else text


# ------------------------------------------------------------------------ frames
def closed_rows(rows: np.ndarray, start_ms: int, end_ms: int, interval: str) -> tuple[np.ndarray, int]:
    """Keep closed candles in ``[start, end)``; returns ``(rows, covered_end_ms)``.

    A candle is closed when its whole span lies before ``end_ms`` *and* the exchange
    did not flag it unconfirmed. An unconfirmed candle ends the coverage at its open
    time, so the next run asks for it again."""
    covered = end_ms
    if len(rows):
        flagged = rows[:, 11] == 0
        if flagged.any():
            covered = min(end_ms, int(rows[flagged, 0].min()))
        opens = rows[:, 0].astype(np.int64)
        closes = close_time_ms(opens, interval) + 1 if interval == "1M" else opens + next_open_ms(0, interval)
        keep = (opens >= start_ms) & (closes <= covered)
        rows = rows[keep]
    return rows, covered


def rows_to_frame(rows: np.ndarray, interval: str) -> pd.DataFrame:
    """Rich rows -> a candle frame (close time filled from the interval when not reported)."""
    if len(rows) == 0:
        return empty_candles()
    rows = rows.copy()
    missing_ct = np.isnan(rows[:, 6])
    if missing_ct.any():
        rows[missing_ct, 6] = close_time_ms(rows[missing_ct, 0].astype(np.int64), interval)
    rows[np.isnan(rows[:, 8]), 8] = 0
    return candles_from_arrays(rows[:, :11])


def unreported_columns(rows: np.ndarray) -> list[str]:
    """Which optional columns the exchange did not send (all NaN in the raw rows); the close
    time is not one of them: when absent it is the bucket's last ms, exactly as Binance's."""
    if len(rows) == 0:
        return []
    idx = {"quote_volume": 7, "trades": 8, "taker_buy_base": 9, "taker_buy_quote": 10}
    return [c for c, i in idx.items() if np.isnan(rows[:, i]).all()]
