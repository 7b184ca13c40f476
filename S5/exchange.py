"""Exchange rules and fee models of the backtest: what Binance would accept and charge.

- :class:`LotRules` -- a symbol's quantity filters as plain floats (``LOT_SIZE``,
  ``MARKET_LOT_SIZE``, ``MIN_NOTIONAL`` / ``NOTIONAL``, ``PRICE_FILTER.tickSize``),
  built from S6's :class:`S6.filters.SymbolFilters` (S6 parses ``exchangeInfo``; this
  module only reads it). :meth:`LotRules.entry_limits` gives the step, minimum and
  maximum quantity and minimum notional an entry must meet; the engine hands them to
  vectorbt (``size_granularity`` / ``min_size`` / ``max_size``, see :mod:`S5.engine`).
- Fee models (``FEE_MODELS``): ``taker`` -- every fill pays the taker rate (S7
  ``--order-type market``; the default, the single ``--fees`` of before); ``mixed`` --
  what S7 ``--order-type limit`` sends: entries and signal exits are LIMIT orders
  (maker), stop-loss / take-profit exits, kill-switch flattening and the end-of-test
  close are MARKET (taker); ``maker`` -- every fill pays the maker rate (a best case,
  e.g. LIMIT_MAKER orders and no stops). ``bnb_discount`` takes 25 % off both rates
  (Binance spot, fees paid in BNB).
- :func:`resolve_lot_rules` -- the ``--exchange-filters auto|on|off`` decision (see
  S5/README.md): ``auto`` uses filters known **without the network** (``--exchange-info
  FILE``, the ``exchangeInfo`` cache of S6/S7, or -- for simulated market data -- the
  generic symbol info S7's dry run uses), and stays off otherwise; ``on`` also fetches
  ``exchangeInfo`` (S6's loader) and fails when there is none; ``off`` disables them.

>>> from decimal import Decimal
>>> from S6.filters import SymbolFilters
>>> f = SymbolFilters(symbol="BTCUSDT", step_size=Decimal("0.00001"), min_qty=Decimal("0.00001"),
...                   tick_size=Decimal("0.01"), min_notional=Decimal("10"))
>>> lot = LotRules.from_filters(f, source="example")
>>> lot.entry_limits(market=True)
(1e-05, 1e-05, inf, 10.0)
>>> round(lot.round_qty(0.142857142857), 10)
0.14285
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from S1.errors import UserError
from S5.costs import BNB_DISCOUNT, FEE_MODELS, Costs, LotRules, fee_rates  # noqa: F401  (re-exported for callers)

log = logging.getLogger(__name__)

FILTER_MODES = ("auto", "on", "off")


def describe_costs(costs) -> str:
    """One sentence for reports: fee model and rates, slippage, exchange filters.

    >>> from S5.engine import Costs
    >>> describe_costs(Costs())
    'Fees 0.1% per fill (taker), slippage 0.05% per side; exchange filters off.'
    """
    if costs.single_rate is not None:
        fee = f"Fees {costs.single_rate * 100:.4g}% per fill ({costs.fee_model})"
    else:
        fee = (f"Fees maker {costs.maker_rate * 100:.4g}% (entries and signal exits, LIMIT) / taker "
               f"{costs.taker_rate * 100:.4g}% (stops, kill-switch, end of test)")
    if costs.bnb_discount:
        fee += " after the 25% BNB discount"
    lot = costs.lot
    filt = "exchange filters off" if lot is None else (
        f"exchange filters of {lot.symbol} ({lot.source or 'given'}): quantity step {lot.step:g}, minQty "
        f"{lot.min_qty:g}, minimum notional {lot.min_notional:g}")
    return f"{fee}, slippage {costs.slippage * 100:.4g}% per side; {filt}."


# ----------------------------------------------------------------------------- CLI
def add_execution_args(p) -> None:
    """``--maker-fee --taker-fee --fee-model --bnb-discount --exchange-filters --exchange-info``
    (``--fee`` and ``--slippage-bps`` come from :func:`S1.options.add_fee_options`)."""
    g = p.add_argument_group("fees and exchange filters")
    g.add_argument("--fee-model", default="taker", choices=FEE_MODELS,
                   help="taker: every fill pays the taker fee (S7 --order-type market; default); mixed: entries "
                        "and signal exits pay maker (S7 --order-type limit), stops / kill-switch / end-of-test "
                        "taker; maker: every fill pays maker (best case)")
    g.add_argument("--taker-fee", type=float, default=None, help="taker fee per side (default: --fee)")
    g.add_argument("--maker-fee", type=float, default=None, help="maker fee per side (default: --fee)")
    g.add_argument("--bnb-discount", action="store_true", help="25 %% off both fees (Binance spot, fees paid in BNB)")
    g.add_argument("--exchange-filters", default="auto", choices=FILTER_MODES,
                   help="round quantities to LOT_SIZE, skip entries below minQty / MIN_NOTIONAL. auto (default): "
                        "on when the symbol's filters are known offline (--exchange-info, the exchangeInfo cache, "
                        "or simulated data's generic filters); on: also fetch exchangeInfo; off")
    g.add_argument("--exchange-info", default=None, metavar="FILE", help="a saved GET /api/v3/exchangeInfo body")


def costs_from_args(args):
    """The :class:`S5.engine.Costs` of ``--fees --slippage --taker-fee --maker-fee --fee-model
    --bnb-discount`` (filters are added by :func:`with_filters` once the market is known).
    ``--fees`` alone sets both rates; ``--taker-fee`` / ``--maker-fee`` override one each."""
    taker = args.fees if args.taker_fee is None else args.taker_fee
    maker = args.maker_fee if args.maker_fee is not None else (None if args.taker_fee is None else args.fees)
    return Costs(fees=taker, slippage=args.slippage, maker_fee=maker, fee_model=args.fee_model,
                 bnb_discount=bool(args.bnb_discount))


def with_filters(costs, symbol: str, *, mode: str = "auto", file=None, simulated: bool = False,
                 price: float | None = None):
    """``costs`` with the :class:`LotRules` of ``--exchange-filters mode`` (unchanged when off
    or when ``costs`` already carries rules)."""
    from dataclasses import replace

    if costs.lot is not None:
        return costs
    lot = resolve_lot_rules(symbol, mode=mode, file=file, simulated=simulated, price=price)
    return costs if lot is None else replace(costs, lot=lot)


def peek_market(path: Path) -> tuple[bool, float | None]:
    """``(simulated, last close)`` of a toolkit Parquet file, or ``(False, None)`` when it is
    missing (the caller's own loader then names the command that creates it)."""
    from S1.datasets import read_metadata, read_parquet
    from S1.storage import as_path

    if not as_path(path).exists():   # a Path, or an S3Path when DATA_DIR is s3://
        return False, None
    meta = read_metadata(path)
    try:
        close = read_parquet(path, columns=["close"])["close"].to_numpy(np.float64)
        last = float(close[np.isfinite(close)][-1]) if np.isfinite(close).any() else None
    except Exception:  # noqa: BLE001 - a malformed file is reported by the real loader
        last = None
    return bool(meta.get("simulated", False)), last


def resolve_lot_rules(symbol: str, *, mode: str = "auto", file: str | Path | None = None, simulated: bool = False,
                      price: float | None = None, settings=None) -> LotRules | None:
    """The :class:`LotRules` of ``symbol`` for ``--exchange-filters mode`` (None: off).

    Order: ``file``; the exchangeInfo cache (``S1.datasets.exchange_info_path``); for
    simulated data, S7's generic symbol info (``S1.offline.simulated_symbol_info``
    at ``price``); with ``mode='on'`` only, ``GET /api/v3/exchangeInfo`` (S6's loader).
    """
    from S1.datasets import exchange_info_path, normalize_symbol
    from S1.settings import get_settings
    from S6.filters import SymbolFilters, read_exchange_info_file, symbol_filters

    if mode not in FILTER_MODES:
        raise UserError(f"unknown --exchange-filters {mode!r}", "use auto, on or off")
    if mode == "off":
        if file is not None:
            raise UserError("--exchange-info has no effect with --exchange-filters off", "drop one of them")
        return None
    sym = normalize_symbol(symbol)
    if file is not None:
        return LotRules.from_filters(symbol_filters(read_exchange_info_file(file), sym), source=f"file {Path(file).name}")
    settings = settings or get_settings()
    cache = exchange_info_path(data_dir=settings.data_dir)
    if cache.exists():
        try:
            return LotRules.from_filters(symbol_filters(read_exchange_info_file(cache), sym),
                                         source=f"cached exchangeInfo {cache.name}")
        except UserError as exc:
            log.warning("exchangeInfo cache %s not usable for %s: %s", cache, sym, exc.problem)
    if simulated:
        from S1.offline import simulated_symbol_info

        info = simulated_symbol_info(sym, float(price) if price and np.isfinite(price) else 100.0)
        return LotRules.from_filters(SymbolFilters.from_symbol_info(info),
                                     source="generic filters of the simulated market (S7 dry run)")
    if mode == "on":
        from S6.filters import filters_for

        return LotRules.from_filters(filters_for(sym, settings=settings), source="exchangeInfo")
    log.info("no exchangeInfo for %s offline: the backtest does not apply LOT_SIZE / MIN_NOTIONAL "
                "(pass --exchange-info FILE or --exchange-filters on)", sym)
    return None


__all__ = ["BNB_DISCOUNT", "FEE_MODELS", "FILTER_MODES", "LotRules", "add_execution_args", "costs_from_args",
           "describe_costs", "fee_rates", "peek_market", "resolve_lot_rules", "with_filters"]
