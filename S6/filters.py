"""Exchange filters: round orders to what Binance accepts, or refuse them with the reason.

Binance rejects (``-1013``) any order whose quantity is not a multiple of
``LOT_SIZE.stepSize`` within ``minQty``..``maxQty``, whose price is not a multiple
of ``PRICE_FILTER.tickSize`` within ``minPrice``..``maxPrice``, or whose notional
(price x quantity) is below ``MIN_NOTIONAL.minNotional`` (older) /
``NOTIONAL.minNotional`` (newer). Everything here is :class:`~decimal.Decimal`,
so ``0.1 + 0.2`` style float errors never produce a rejected order:

- quantities are rounded **down** to the step (never more than was sized); a
  quantity above ``maxQty`` is lowered to it (noted in ``adjustments``);
- limit prices are rounded down for a BUY and up for a SELL (never a worse price);
- anything still outside the filters is refused: ``OrderCheck.ok`` is False and
  ``reason`` says which filter and by how much.

``exchangeInfo`` comes from :func:`load_exchange_info`: a given file, the cache
``S1.datasets.exchange_info_path()`` while fresh, or ``GET /api/v3/exchangeInfo``
through :class:`S1.rest_client.BinanceRest` (the cache is rewritten atomically;
a stale cache is used, with a warning, when the exchange cannot be reached).

>>> f = SymbolFilters(symbol="BTCUSDT", step_size=Decimal("0.00001"), min_qty=Decimal("0.00001"),
...                   tick_size=Decimal("0.01"), min_notional=Decimal("10"))
>>> c = f.check_order(0.142857142857, 43000.004)
>>> c.ok, str(c.qty), str(c.price), str(c.notional)
(True, '0.14285', '43000.00', '6142.5500000')
>>> f.check_order(0.0002, 43000).reason
'notional 8.6 is below the minimum notional 10 (MIN_NOTIONAL); raise the size to at least 0.00024'
"""

from __future__ import annotations

import difflib
import json
import logging
import time
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

import numpy as np

from S1.errors import UserError

log = logging.getLogger(__name__)

Side = Literal["BUY", "SELL"]
OrderType = Literal["LIMIT", "MARKET"]


def D(x) -> Decimal:
    """Exact decimal of a number or string. Floats (also numpy's) go through ``str``, the
    shortest text that round-trips, so ``D(0.1) == Decimal("0.1")``."""
    if isinstance(x, Decimal):
        return x
    if isinstance(x, np.generic):  # np.float32(0.1) prints as 0.1, its .item() does not
        x = str(x) if isinstance(x, np.floating) else x.item()
    try:
        d = Decimal(str(x))
    except InvalidOperation:
        raise UserError(f"{x!r} is not a number", "pass a decimal number") from None
    if not d.is_finite():
        raise UserError(f"{x!r} is not a finite number", "pass a finite decimal number")
    return d


def _opt(x) -> Decimal | None:
    """Filter value; Binance uses 0 for 'disabled'."""
    if x is None:
        return None
    d = D(x)
    return None if d == 0 else d


def plain(d: Decimal | None) -> str:
    """Decimal as plain text without exponent or trailing zeros (``1E+1`` -> ``10``)."""
    if d is None:
        return "-"
    s = f"{d.normalize():f}"
    return s


def floor_to_step(value: Decimal, step: Decimal | None, base: Decimal | None = None) -> Decimal:
    """Largest ``base + n * step <= value`` (Binance's rule: ``(value - base) % step == 0``)."""
    return _to_step(value, step, base, ROUND_FLOOR)


def ceil_to_step(value: Decimal, step: Decimal | None, base: Decimal | None = None) -> Decimal:
    """Smallest ``base + n * step >= value``."""
    return _to_step(value, step, base, ROUND_CEILING)


def _to_step(value: Decimal, step: Decimal | None, base: Decimal | None, mode: str) -> Decimal:
    if step is None:
        return value
    base = base if base is not None and value >= base else Decimal(0)
    n = ((value - base) / step).to_integral_value(rounding=mode)
    out = base + n * step
    return out.quantize(step) if step.as_tuple().exponent < 0 else out


def round_to_tick(value: Decimal, tick: Decimal | None, *, direction: Literal["down", "up", "nearest"] = "down",
                  base: Decimal | None = None) -> Decimal:
    """Round a price to the tick grid anchored at ``base`` (PRICE_FILTER.minPrice)."""
    if tick is None:
        return value
    base = base or Decimal(0)
    mode = {"down": ROUND_FLOOR, "up": ROUND_CEILING, "nearest": ROUND_HALF_EVEN}[direction]
    n = ((value - base) / tick).to_integral_value(rounding=mode)
    out = base + n * tick
    return out.quantize(tick) if tick.as_tuple().exponent < 0 else out


@dataclass(frozen=True)
class OrderCheck:
    """Result of :meth:`SymbolFilters.check_order`."""

    ok: bool
    symbol: str
    qty: Decimal                 #: rounded quantity (what to send)
    price: Decimal               #: rounded price (limit) or the reference price (market)
    notional: Decimal
    reason: str | None = None    #: why it was refused (None when ok)
    filter: str | None = None    #: the filter that refused: STATUS, PRICE_FILTER, LOT_SIZE, MIN_NOTIONAL ...
    adjustments: tuple[str, ...] = ()

    def params(self) -> dict[str, str]:
        """``quantity`` / ``price`` strings for the order request (exact, no exponent)."""
        return {"quantity": plain(self.qty), "price": plain(self.price)}


@dataclass(frozen=True)
class SymbolFilters:
    """The order filters of one symbol (``None`` = not enforced)."""

    symbol: str
    status: str = "TRADING"
    base_asset: str = ""
    quote_asset: str = ""
    tick_size: Decimal | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    step_size: Decimal | None = None
    min_qty: Decimal | None = None
    max_qty: Decimal | None = None
    market_step_size: Decimal | None = None
    market_min_qty: Decimal | None = None
    market_max_qty: Decimal | None = None
    min_notional: Decimal | None = None
    max_notional: Decimal | None = None
    notional_filter: str = "MIN_NOTIONAL"
    min_notional_market: bool = True
    max_notional_market: bool = False
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_symbol_info(cls, entry: dict) -> "SymbolFilters":
        """Build from one ``exchangeInfo.symbols[]`` entry."""
        by = {f.get("filterType"): f for f in entry.get("filters", [])}
        pf, lot, mlot = by.get("PRICE_FILTER", {}), by.get("LOT_SIZE", {}), by.get("MARKET_LOT_SIZE", {})
        notional, name = (by["NOTIONAL"], "NOTIONAL") if "NOTIONAL" in by else (by.get("MIN_NOTIONAL", {}), "MIN_NOTIONAL")
        return cls(
            symbol=entry.get("symbol", "?"), status=entry.get("status", "TRADING"),
            base_asset=entry.get("baseAsset", ""), quote_asset=entry.get("quoteAsset", ""),
            tick_size=_opt(pf.get("tickSize")), min_price=_opt(pf.get("minPrice")), max_price=_opt(pf.get("maxPrice")),
            step_size=_opt(lot.get("stepSize")), min_qty=_opt(lot.get("minQty")), max_qty=_opt(lot.get("maxQty")),
            market_step_size=_opt(mlot.get("stepSize")), market_min_qty=_opt(mlot.get("minQty")),
            market_max_qty=_opt(mlot.get("maxQty")),
            min_notional=_opt(notional.get("minNotional")), max_notional=_opt(notional.get("maxNotional")),
            notional_filter=name,
            min_notional_market=bool(notional.get("applyToMarket", notional.get("applyMinToMarket", True))),
            max_notional_market=bool(notional.get("applyMaxToMarket", False)),
            raw=entry,
        )

    # -------------------------------------------------------------- rounding
    def round_qty(self, qty, *, market: bool = False) -> Decimal:
        """Quantity rounded **down** to the step (the market step for market orders when set)."""
        step = (self.market_step_size or self.step_size) if market else self.step_size
        return floor_to_step(D(qty), step, self.min_qty if step == self.step_size else None)

    def round_price(self, price, *, direction: Literal["down", "up", "nearest"] = "down") -> Decimal:
        """Price on the tick grid. For a long's stop use ``"up"`` (stop nearer the entry:
        the risk stays within the sized R), for its take-profit ``"down"``."""
        return round_to_tick(D(price), self.tick_size, direction=direction, base=self.min_price)

    # ---------------------------------------------------------------- checks
    def check_order(self, qty, price, *, side: Side = "BUY", order_type: OrderType = "LIMIT") -> OrderCheck:
        """Round ``qty``/``price`` and check every filter. ``price`` of a MARKET order is the
        reference price (last or average) used for the notional check."""
        side, order_type = str(side).upper(), str(order_type).upper()
        if side not in ("BUY", "SELL") or order_type not in ("LIMIT", "MARKET"):
            raise UserError(f"unsupported order {side} {order_type}", "use side BUY/SELL and type LIMIT/MARKET")
        market = order_type == "MARKET"
        q_in, p_in = D(qty), D(price)
        notes: list[str] = []

        def refuse(filt: str, why: str, q: Decimal = q_in, p: Decimal = p_in) -> OrderCheck:
            return OrderCheck(False, self.symbol, q, p, q * p, why, filt, tuple(notes))

        if self.status != "TRADING":
            return refuse("STATUS", f"{self.symbol} is not trading (status {self.status})")
        if p_in <= 0:
            return refuse("PRICE_FILTER", f"price must be > 0, got {plain(p_in)}")
        if q_in <= 0:
            return refuse("LOT_SIZE", f"quantity must be > 0, got {plain(q_in)}")

        p = p_in
        if not market:
            p = self.round_price(p_in, direction="down" if side == "BUY" else "up")
            if p != p_in:
                notes.append(f"price {plain(p_in)} -> {plain(p)} (tick {plain(self.tick_size)})")
            if p <= 0 or (self.min_price is not None and p < self.min_price):
                return refuse("PRICE_FILTER", f"price {plain(p_in)} is below minPrice {plain(self.min_price)}"
                              f" (PRICE_FILTER)", p=p)
            if self.max_price is not None and p > self.max_price:
                return refuse("PRICE_FILTER", f"price {plain(p_in)} is above maxPrice {plain(self.max_price)}"
                              f" (PRICE_FILTER)", p=p)

        step = (self.market_step_size or self.step_size) if market else self.step_size
        min_q = (self.market_min_qty or self.min_qty) if market else self.min_qty
        max_q = self.max_qty
        if market and self.market_max_qty is not None:
            max_q = self.market_max_qty if max_q is None else min(max_q, self.market_max_qty)
        lot = "MARKET_LOT_SIZE" if market and self.market_step_size else "LOT_SIZE"
        q = self.round_qty(q_in, market=market)
        if q != q_in:
            notes.append(f"quantity {plain(q_in)} -> {plain(q)} (step {plain(step)}, rounded down)")
        if max_q is not None and q > max_q:
            q = floor_to_step(max_q, step, self.min_qty if step == self.step_size else None)
            notes.append(f"quantity lowered to maxQty {plain(max_q)} ({lot})")
        if q <= 0 or (min_q is not None and q < min_q):
            return refuse(lot, f"quantity {plain(q_in)} is below minQty {plain(min_q)} ({lot}, step "
                          f"{plain(step)}); raise the size to at least {plain(min_q or step)}", q=q, p=p)

        notional = q * p
        check_min = self.min_notional is not None and (not market or self.min_notional_market)
        if check_min and notional < self.min_notional:
            need = ceil_to_step(self.min_notional / p, step, self.min_qty if step == self.step_size else None)
            need = max(need, min_q) if min_q is not None else need
            return refuse(self.notional_filter,
                          f"notional {plain(notional)} is below the minimum notional {plain(self.min_notional)} "
                          f"({self.notional_filter}); raise the size to at least {plain(need)}", q=q, p=p)
        check_max = self.max_notional is not None and (not market or self.max_notional_market)
        if check_max and notional > self.max_notional:
            q = floor_to_step(self.max_notional / p, step, self.min_qty if step == self.step_size else None)
            notes.append(f"quantity lowered to {plain(q)} for maxNotional {plain(self.max_notional)}")
            notional = q * p
        return OrderCheck(True, self.symbol, q, p, notional, None, None, tuple(notes))


# --------------------------------------------------------------- exchangeInfo
def symbol_filters(info: dict, symbol: str) -> SymbolFilters:
    """Filters of ``symbol`` from an ``exchangeInfo`` body; an unknown symbol raises a
    :class:`UserError` suggesting close matches."""
    from S1.datasets import normalize_symbol

    sym = normalize_symbol(symbol)
    entries = info.get("symbols") or []
    for entry in entries:
        if entry.get("symbol") == sym:
            return SymbolFilters.from_symbol_info(entry)
    near = difflib.get_close_matches(sym, [e.get("symbol", "") for e in entries], n=4, cutoff=0.6)
    raise UserError(f"symbol {sym} is not in exchangeInfo ({len(entries)} symbols)",
                    f"did you mean {', '.join(near)}?" if near else "check the symbol (e.g. BTCUSDT)")


def _valid_body(body) -> bool:
    return isinstance(body, dict) and isinstance(body.get("symbols"), list)


def read_exchange_info_file(path: str | Path) -> dict:
    """Read and check an exchangeInfo JSON body (a :class:`UserError` names the problem)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"exchangeInfo file {p} does not exist",
                        "pass a saved GET /api/v3/exchangeInfo body, or omit --exchange-info to fetch it")
    try:
        body = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"exchangeInfo file {p} is not JSON ({exc.__class__.__name__})",
                        "save the raw body of GET /api/v3/exchangeInfo") from None
    if not _valid_body(body):
        raise UserError(f"exchangeInfo file {p} has no 'symbols' list",
                        "save the raw body of GET /api/v3/exchangeInfo") from None
    return body


async def fetch_exchange_info(settings=None) -> dict:
    """``GET /api/v3/exchangeInfo`` from ``BINANCE_API_URL`` (bounded retries of BinanceRest)."""
    from S1.rest_client import BinanceRest

    async with BinanceRest(settings) as api:
        return await api.exchange_info()


def load_exchange_info(*, file: str | Path | None = None, max_age_hours: float = 24.0, refresh: bool = False,
                       settings=None) -> dict:
    """The exchangeInfo body: ``file`` when given; else the cache while younger than
    ``max_age_hours`` (and not ``refresh``); else fetched and cached atomically. A
    stale cache is used with a warning when the fetch fails; no cache at all
    re-raises the :class:`~S1.errors.NetworkError`.

    Sync only (uses :func:`S1.rest_client.run`); inside an event loop await
    :func:`fetch_exchange_info` and :func:`cache_exchange_info` instead.
    """
    from S1.datasets import exchange_info_path
    from S1.errors import NetworkError
    from S1.rest_client import run
    from S1.settings import get_settings

    if file is not None:
        return read_exchange_info_file(file)
    settings = settings or get_settings()
    cache = exchange_info_path(data_dir=settings.data_dir)
    cached, age_h = None, None
    if cache.exists():
        age_h = (time.time() - cache.stat().st_mtime) / 3600
        try:
            cached = read_exchange_info_file(cache)
        except UserError as exc:
            log.warning("ignoring the exchangeInfo cache: %s", exc.problem)
    if cached is not None and not refresh and age_h is not None and age_h <= max_age_hours:
        log.info("exchangeInfo: cache %s (%.1f h old)", cache, age_h)
        return cached
    try:
        body = run(fetch_exchange_info(settings))
    except NetworkError as exc:
        if cached is not None:
            log.warning("exchangeInfo: %s; using the cache from %.1f h ago", exc.problem, age_h)
            return cached
        raise NetworkError(exc.problem, "check the connection/BINANCE_API_URL, or pass --exchange-info FILE") from None
    if not _valid_body(body):
        raise UserError("the exchange answered exchangeInfo without a 'symbols' list", "check BINANCE_API_URL")
    cache_exchange_info(body, settings=settings)
    log.info("exchangeInfo: fetched %d symbols from %s, cached in %s", len(body["symbols"]),
             settings.binance_api_url, cache)
    return body


def cache_exchange_info(body: dict, *, settings=None) -> Path:
    """Write ``body`` to the exchangeInfo cache (temp file + rename)."""
    from S1.datasets import atomic_write_text, exchange_info_path
    from S1.settings import get_settings

    settings = settings or get_settings()
    return atomic_write_text(exchange_info_path(data_dir=settings.data_dir), json.dumps(body))


def filters_for(symbol: str, **load_kwargs) -> SymbolFilters:
    """``symbol_filters(load_exchange_info(**load_kwargs), symbol)``."""
    return symbol_filters(load_exchange_info(**load_kwargs), symbol)


__all__ = ["D", "OrderCheck", "SymbolFilters", "cache_exchange_info", "ceil_to_step", "fetch_exchange_info",
           "filters_for", "floor_to_step", "load_exchange_info", "plain", "read_exchange_info_file",
           "round_to_tick", "symbol_filters"]
