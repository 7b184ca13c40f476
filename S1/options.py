"""One option vocabulary for every script: the same thing has one name, unit and default.

=====================  ==========================================  ===========================
option                 meaning (unit)                               old spellings (deprecated)
=====================  ==========================================  ===========================
``--fee``              fee per side, fraction of the notional       ``--fees``
``--slippage-bps``     slippage per side, basis points (5 = 0.05 %)  ``--slippage`` (a fraction)
``--cash``             starting cash in the quote asset             ``--init-cash``, ``--balance``
``--risk``             S6 risk file (``none``: no risk layer)       ``--risk-config``
``--rules``            S4 rule file (default ``S4/rules.yaml``)
``--no-html``          do not write the HTML report                 ``--no-report``
``--no-png``           do not write the PNG chart                   ``--no-plot``
``--offline``          the local exchange + simulated market        (``OFFLINE=1`` in ``.env``)
``--days``             window length in days up to now
``--since``            first candle, UTC date (S3 news: ``--since``)
=====================  ==========================================  ===========================

An old spelling still works for one release: it stores into the new option and prints one
``deprecated: --fees is now --fee`` line to stderr.

>>> from S1.cli import ArgumentParser
>>> p = ArgumentParser(prog="python S5/x.py")
>>> add_fee_options(p); add_cash_option(p)
>>> a = p.parse_args(["--fee", "0.002", "--slippage-bps", "10", "--cash", "500"])
>>> a.fee, a.slippage_bps, slippage_fraction(a), a.cash
(0.002, 10.0, 0.001, 500.0)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

DEFAULT_FEE = 0.001            #: 0.1 % per side (Binance spot taker)
DEFAULT_SLIPPAGE_BPS = 5.0     #: 5 bp = 0.05 % per side
DEFAULT_CASH = 10_000.0
DEFAULT_RULES = "S4/rules.yaml"
DEFAULT_RISK = "S6/risk.yaml"
#: order type values everywhere (S6 sizing, S7 orders): lower case; upper case is accepted
ORDER_TYPES = ("market", "limit")


def deprecated(new: str, *, convert: Callable[[Any], Any] | None = None, const: Any = None,
               flag: bool = False) -> type[argparse.Action]:
    """An argparse action for an old spelling: stores into the new option's dest (through
    ``convert``, e.g. a fraction to basis points) and prints ``deprecated: --old is now --new``.
    ``flag=True``: a switch without a value (stores ``const``, default True)."""

    class _Deprecated(argparse.Action):
        def __init__(self, option_strings, dest, **kw):
            if flag:
                kw["nargs"] = 0
            kw.setdefault("help", argparse.SUPPRESS)
            super().__init__(option_strings, dest, **kw)

        def __call__(self, parser, namespace, values, option_string=None):
            print(f"deprecated: {option_string} is now {new} (the old spelling goes in the next release)",
                  file=sys.stderr)
            value = (True if const is None else const) if flag else values
            if convert is not None and not flag:
                try:
                    value = convert(value)
                except (TypeError, ValueError):
                    parser.error(f"argument {option_string}: invalid value {values!r}")
            setattr(namespace, self.dest, value)

    return _Deprecated


def _fraction(text: str) -> float:
    v = float(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction from 0 to 1 (0.001 = 0.1 %)")
    return v


def _bps(text: str) -> float:
    v = float(text)
    if not 0 <= v < 10_000:
        raise argparse.ArgumentTypeError(f"{text} basis points is not from 0 to 10000 (5 = 0.05 %)")
    return v


def _positive(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return v


def add_fee_options(p, *, fee: float = DEFAULT_FEE, slippage_bps: float = DEFAULT_SLIPPAGE_BPS,
                    slippage: bool = True) -> None:
    """``--fee`` (fraction, dest ``fee``) and ``--slippage-bps`` (basis points, dest ``slippage_bps``);
    the old ``--fees`` and ``--slippage`` (a fraction) still work."""
    p.add_argument("--fee", type=_fraction, default=fee, metavar="FRACTION",
                   help="fee per side, fraction of the notional (0.001 = 0.1 %%)")
    p.add_argument("--fees", dest="fee", action=deprecated("--fee", convert=_fraction))
    if slippage:
        p.add_argument("--slippage-bps", type=_bps, default=slippage_bps, metavar="BPS",
                       help="slippage per side in basis points (5 = 0.05 %%)")
        p.add_argument("--slippage", dest="slippage_bps",
                       action=deprecated("--slippage-bps (basis points)", convert=lambda v: _fraction(v) * 1e4))


def slippage_fraction(args) -> float:
    """``--slippage-bps`` as the fraction the S5 engine takes (5 bp -> 0.0005)."""
    return round(float(getattr(args, "slippage_bps", 0.0) or 0.0) / 1e4, 12)


def add_cash_option(p, *, default: float = DEFAULT_CASH) -> None:
    """``--cash`` (dest ``cash``); old ``--init-cash`` and ``--balance``."""
    p.add_argument("--cash", type=_positive, default=default, metavar="QUOTE",
                   help="starting cash in the quote asset")
    for old in ("--init-cash", "--balance"):
        p.add_argument(old, dest="cash", action=deprecated("--cash", convert=float))


def add_risk_option(p, *, default: str | None = None, allow_none: bool = True, help: str | None = None) -> None:
    """``--risk FILE`` (dest ``risk``; default: S6/risk.yaml as the script resolves it); old ``--risk-config``."""
    p.add_argument("--risk", default=default, metavar="YAML|none" if allow_none else "YAML",
                   help=help or ("S6 risk file (default S6/risk.yaml)" + ("; none: no risk layer" if allow_none else "")))
    p.add_argument("--risk-config", dest="risk", action=deprecated("--risk"))


def add_rules_option(p, *, default: str | None = DEFAULT_RULES, help: str | None = None) -> None:
    """``--rules`` with the one default, S4/rules.yaml (outputs carry its name)."""
    p.add_argument("--rules", default=default, metavar="YAML", type=rules_file,
                   help=help or "S4 rule file (default S4/rules.yaml); outputs carry its name")


def rules_file(text: str) -> str:
    """``--rules`` value: as given, or -- when it does not exist from here but does from the repository
    root (``S4/rules.yaml`` run from another folder) -- the repository's file."""
    if not text or Path(text).exists() or Path(text).is_absolute():
        return text
    repo = Path(__file__).resolve().parents[1] / text
    return str(repo) if repo.exists() else text


def add_output_switches(p, *, html: bool = True, png: bool = True) -> None:
    """``--no-html`` / ``--no-png``; old ``--no-report`` (HTML) and ``--no-plot`` (PNG)."""
    if html:
        p.add_argument("--no-html", action="store_true", help="do not write the HTML report")
        p.add_argument("--no-report", dest="no_html", action=deprecated("--no-html", flag=True))
    if png:
        p.add_argument("--no-png", action="store_true", help="do not write the PNG chart")
        p.add_argument("--no-plot", dest="no_png", action=deprecated("--no-png", flag=True))


def add_offline_option(p) -> None:
    """``--offline``: run against the project's local exchange on a simulated market (labelled simulated);
    ``OFFLINE=1`` in ``.env`` / the environment does the same (see :func:`S1.offline.offline_mode`)."""
    p.add_argument("--offline", action="store_true",
                   help="run against the local exchange on a simulated market (outputs labelled simulated); "
                        "OFFLINE=1 in .env does the same")


def add_market_options(p, *, symbol_default: str | None = None, interval_default: str | None = "1h",
                       days_default: int | None = 365) -> None:
    """``--symbol --interval --days`` (None default: required)."""
    p.add_argument("--symbol", default=symbol_default, required=symbol_default is None, help="e.g. BTCUSDT")
    p.add_argument("--interval", default=interval_default, required=interval_default is None,
                   help="Binance interval, e.g. 1h")
    p.add_argument("--days", type=int, default=days_default, required=days_default is None,
                   help="window length in days up to now, e.g. 365")


def add_portfolio_options(p, *, max_open_required: bool = True, interval_default: str = "1h") -> None:
    """``--symbols --interval --days --max-open --rank-lookback --name`` of the portfolio scripts
    (``S5/portfolio.py``, ``S7/portfolio_executor.py``): ``--days`` 365 by default, ``--interval`` that of the
    sprint's single-symbol script (1h for S5's backtest, 1m for S7's executor), as :func:`add_market_options`."""
    p.add_argument("--symbols", required=True, help="comma-separated, same quote asset, e.g. BTCUSDT,ETHUSDT,BNBUSDT")
    p.add_argument("--interval", default=interval_default, help="Binance interval, e.g. 1h")
    p.add_argument("--days", type=int, default=365, help="window length in days up to now, e.g. 365")
    p.add_argument("--max-open", required=max_open_required, type=int, default=None if max_open_required else 1,
                   help="most positions open at once, e.g. 2")
    p.add_argument("--rank-lookback", type=int, default=24, help="bars of trailing return that rank competing entries")
    p.add_argument("--name", default=None, help="names the output files (default: from the symbols)")


def add_futures_options(p) -> None:
    """``--market spot|usdm --leverage --no-funding --maint-margin-rate`` of the S5 commands that
    backtest USD-M perpetuals (``S5/backtest.py``, ``S5/parity.py``)."""
    p.add_argument("--market", choices=("spot", "usdm"), default="spot",
                   help="spot (long only) or usdm: Binance USD-M perpetuals -- short rules, --leverage, funding "
                        "from data/<symbol>_funding.parquet (python S1/funding.py) and liquidation")
    p.add_argument("--leverage", type=float, default=1.0, help="USD-M leverage (isolated margin = notional / N)")
    p.add_argument("--no-funding", action="store_true", help="USD-M: ignore funding (no funding file needed)")
    p.add_argument("--maint-margin-rate", type=float, default=None,
                   help="USD-M: an explicit maintenance margin rate (default: the leverage brackets an S7 testnet "
                        "session cached in data/<symbol>_leverage_brackets.json, else the built-in table with a note)")


def add_trading_mode_options(p, *, dry_run_help: str) -> None:
    """``--testnet`` (the default) | ``--dry-run`` | ``--live`` (dest ``mode``) and
    ``--i-understand-this-trades-real-money`` (dest ``real_money``) of the S7 executors: live trading
    needs both the flag and live keys."""
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--testnet", dest="mode", action="store_const", const="testnet",
                      help="trade on the Binance spot testnet (default; keys in .env)")
    mode.add_argument("--dry-run", dest="mode", action="store_const", const="dry-run", help=dry_run_help)
    mode.add_argument("--live", dest="mode", action="store_const", const="live",
                      help="REAL MONEY: needs --i-understand-this-trades-real-money and live keys")
    p.set_defaults(mode="testnet")
    p.add_argument("--i-understand-this-trades-real-money", dest="real_money", action="store_true",
                   help="required with --live")


def order_type(text: str) -> str:
    """argparse ``type`` for order types: ``market``/``limit`` in any case -> lower case."""
    v = str(text).strip().lower()
    if v not in ORDER_TYPES:
        raise argparse.ArgumentTypeError(f"invalid order type {text!r} (choose from {', '.join(ORDER_TYPES)})")
    return v


def rules_label(rules: str | Path | None) -> str:
    """The rules file as titles name it: ``rules_ta_only.yaml``."""
    return Path(str(rules or DEFAULT_RULES)).name


__all__ = ["DEFAULT_CASH", "DEFAULT_FEE", "DEFAULT_RISK", "DEFAULT_RULES", "DEFAULT_SLIPPAGE_BPS", "ORDER_TYPES",
           "add_cash_option", "add_fee_options", "add_futures_options", "add_market_options", "add_offline_option",
           "add_output_switches", "add_portfolio_options", "add_risk_option", "add_rules_option",
           "add_trading_mode_options", "deprecated",
           "order_type", "rules_label", "slippage_fraction"]
