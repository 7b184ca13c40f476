"""Dataset names, the candle schema and atomic Parquet I/O -- the one place that
builds data file names. Every sprint asks this module for its paths.

Naming: ``<symbol>_<interval>_<days>d[_<kind>].parquet`` in the data directory,
e.g. ``ethusdc_1h_365d.parquet`` (S1), ``ethusdc_1h_365d_ta.parquet`` (S2),
``ethusdc_1h_365d_signals.parquet`` (S4). A non-Binance exchange id is prefixed
(``okx_btcusdt_1h_30d.parquet``). The month interval ``1M`` is spelled ``1mo`` in
file names so it never collides with ``1m`` on case-insensitive file systems.

Callers name a market and window with one :class:`Dataset` value (built from a script's
arguments by :meth:`Dataset.from_args`) and ask it, or this module, for paths:

>>> ds = Dataset("ETHUSDC", "1h", 365)
>>> dataset_path(ds, data_dir=Path("data")).as_posix()
'data/ethusdc_1h_365d.parquet'

Everything derived from a rule file (:data:`RULE_KINDS`: signals, trades, equity, backtest, stress,
and their reports) also carries the rules file's name after a double underscore,
``<stem>__<rules>_<kind>``, so running ``S4/rules_ta_only.yaml`` after ``S4/rules.yaml`` never
overwrites the other's outputs (the default rules are ``S4/rules.yaml``, token ``rules``).
Files written before this convention (``<stem>_<kind>``) are still read (:func:`existing_dataset_path`).

>>> dataset_path(ds, "signals", data_dir=Path("data")).name
'ethusdc_1h_365d__rules_signals.parquet'
>>> ds.path("trades", rules="S4/rules_ta_only.yaml", data_dir=Path("data")).name
'ethusdc_1h_365d__rules_ta_only_trades.parquet'

The research outputs of a rule file follow the same rule (:data:`RESEARCH_KINDS`):
``reports/<stem>__<rules>_optimize.json|.html``, ``data/<stem>__<rules>_best.yaml``,
``reports/<stem>__<rules>_walkforward.json|.html|_folds.parquet|_equity.parquet`` and
``reports/<stem>__<rules>_lookahead.json`` (readers still find the older
``<stem>_<kind>_<rules>`` names: :func:`renamed_research_path`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from S1.errors import UserError
from S1.intervals import INTERVALS, check_interval
from S1.storage import S3Path, as_path, is_remote

#: Dataset kinds and their file-name suffix / extension.
KINDS: dict[str, tuple[str, str]] = {
    "candles": ("", ".parquet"),
    "ta": ("_ta", ".parquet"),
    "signals": ("_signals", ".parquet"),
    "ml": ("_ml", ".parquet"),
    "equity": ("_equity", ".parquet"),
    "trades": ("_trades", ".parquet"),
    "backtest": ("_backtest", ".json"),
    "stress": ("_stress", ".json"),
}

PRICE_COLUMNS = ("open", "high", "low", "close")
FLOAT_COLUMNS = ("open", "high", "low", "close", "volume", "quote_volume",
                 "taker_buy_base", "taker_buy_quote")
#: Column order of a candle frame (index: ``open_time``).
CANDLE_COLUMNS = ("open", "high", "low", "close", "volume", "close_time",
                  "quote_volume", "trades", "taker_buy_base", "taker_buy_quote")

CANDLE_SCHEMA = pa.schema(
    [pa.field("open_time", pa.timestamp("ms", tz="UTC"), nullable=False)]
    + [pa.field(c, pa.float64()) for c in ("open", "high", "low", "close", "volume")]
    + [pa.field("close_time", pa.timestamp("ms", tz="UTC")),
       pa.field("quote_volume", pa.float64()),
       pa.field("trades", pa.int64()),
       pa.field("taker_buy_base", pa.float64()),
       pa.field("taker_buy_quote", pa.float64())]
)

META_KEY = b"toolkit"
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9]{2,30}$")


# ---------------------------------------------------------------------------- names
def data_dir(data_dir: Path | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``DATA_DIR`` -- a ``Path``, or an
    :class:`S1.storage.S3Path` for ``s3://bucket/prefix`` (see ``S1/storage.py``)."""
    if data_dir is not None:
        return as_path(data_dir)
    from S1.settings import get_settings

    return as_path(get_settings().data_dir)


def local_dir(data_dir: Path | None = None) -> Path:
    """Where files that must stay on this machine go (SQLite databases, state, logs, caches):
    the data directory when it is a folder (as always), else ``LOCAL_STATE_DIR`` (default
    ``data/`` in the repository) when ``DATA_DIR`` is ``s3://``.

    >>> local_dir(Path("data")).as_posix()
    'data'
    """
    d = globals()["data_dir"](data_dir)
    if not isinstance(d, S3Path):
        return d
    from S1.settings import REPO_ROOT, get_settings

    return get_settings().local_state_dir or (REPO_ROOT / "data")


def reports_dir() -> Path:
    from S1.settings import get_settings

    return get_settings().reports_dir


def normalize_symbol(symbol: str) -> str:
    """``'eth/usdc'`` / ``'ethusdc'`` -> ``'ETHUSDC'``; rejects anything else."""
    s = str(symbol).replace("/", "").replace("-", "").replace("_", "").strip().upper()
    if not _SYMBOL_RE.match(s):
        raise UserError(f"invalid symbol {symbol!r}", "use an exchange symbol such as BTCUSDT or ETHUSDC")
    return s


def interval_token(interval: str) -> str:
    check_interval(interval)
    return "1mo" if interval == "1M" else interval


def _days(days) -> int:
    """``days`` as a positive int, else a :class:`UserError` that says how to pass it."""
    try:
        n = None if isinstance(days, bool) or (isinstance(days, float) and not days.is_integer()) else int(days)
    except (TypeError, ValueError):
        n = None
    if n is None or n <= 0:
        raise UserError(f"--days must be a positive whole number of days, got {days!r}",
                        "pass a number of days such as --days 365")
    return n


def _exchange_token(exchange: str | None) -> str | None:
    """The exchange part of a file name: None for Binance (no prefix), else the lower-case id."""
    if exchange is None or str(exchange).strip().lower() in ("", "binance"):
        return None
    token = str(exchange).strip().lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", token):
        raise UserError(f"invalid exchange {exchange!r} for a dataset name",
                        "use a CCXT exchange id such as okx, bybit or okx-swap")
    return token


@dataclass(frozen=True)
class Dataset:
    """One market and window -- the ``(symbol, interval, days)`` every step of the chain reads
    and writes -- validated once: the symbol normalised (``eth/usdc`` -> ``ETHUSDC``), the
    interval one of :data:`~S1.intervals.INTERVALS`, ``days`` a positive whole number, and an
    optional exchange id (None, ``""`` and ``binance`` all mean Binance: no prefix in names).

    >>> ds = Dataset("eth/usdc", "1h", 365)
    >>> ds
    Dataset(symbol='ETHUSDC', interval='1h', days=365)
    >>> ds.stem, ds.label
    ('ethusdc_1h_365d', 'ETHUSDC 1h 365d')
    >>> ds.path("trades", rules="S4/rules_ta_only.yaml", data_dir=Path("data")).as_posix()
    'data/ethusdc_1h_365d__rules_ta_only_trades.parquet'
    >>> Dataset("BTC/USDT", "4h", 30, exchange="OKX").stem
    'okx_btcusdt_4h_30d'
    >>> from dataclasses import replace; replace(ds, interval="1m").stem     # the same market at 1m
    'ethusdc_1m_365d'
    >>> Dataset("BTCUSDT", "1h", 0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    S1.errors.UserError: --days must be a positive whole number of days, got 0 -- pass a number of days such as ...
    """

    symbol: str
    interval: str
    days: int
    exchange: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbol", normalize_symbol(self.symbol))
        object.__setattr__(self, "interval", check_interval(self.interval))
        object.__setattr__(self, "days", _days(self.days))
        object.__setattr__(self, "exchange", _exchange_token(self.exchange))

    def __repr__(self) -> str:
        ex = f", exchange={self.exchange!r}" if self.exchange else ""
        return f"Dataset(symbol={self.symbol!r}, interval={self.interval!r}, days={self.days!r}{ex})"

    @classmethod
    def from_args(cls, args: Any, *, exchange: bool = True) -> Dataset:
        """The dataset named by a script's ``--symbol --interval --days [--exchange]`` (an
        argparse namespace); ``exchange=False`` ignores an ``--exchange`` that names a venue
        rather than a file prefix."""
        ex = getattr(args, "exchange", None) if exchange else None
        return cls(args.symbol, args.interval, args.days, exchange=ex if isinstance(ex, str) else None)

    @property
    def stem(self) -> str:
        """``[exchange_]symbol_interval_<days>d``: the start of every file name of this dataset."""
        prefix = f"{self.exchange}_" if self.exchange else ""
        return f"{prefix}{self.symbol.lower()}_{interval_token(self.interval)}_{self.days}d"

    @property
    def label(self) -> str:
        """``BTCUSDT 1h 365d`` (``okx:BTCUSDT 1h 30d``): for titles and messages."""
        ex = f"{self.exchange}:" if self.exchange else ""
        return f"{ex}{self.symbol} {self.interval} {self.days}d"

    @property
    def args(self) -> str:
        """``--symbol BTCUSDT --interval 1h --days 365``: the options that name it on the command line
        of the S2..S7 scripts (``S1/historical.py`` also takes ``--exchange``: :func:`history_command`)."""
        return f"--symbol {self.symbol} --interval {self.interval} --days {self.days}"

    def path(self, kind: str = "candles", *, rules: str | Path | None = None,
             data_dir: Path | None = None) -> Path:
        """:func:`dataset_path` of this dataset."""
        return dataset_path(self, kind, rules=rules, data_dir=data_dir)


def as_dataset(dataset: Dataset | str, interval: str | None = None, days: int | None = None, *,
               exchange: str | None = None) -> Dataset:
    """``dataset`` itself, or -- the loose form kept for the low-level path builders
    (:func:`dataset_path`, :func:`report_path`) -- the :class:`Dataset` of
    ``(symbol, interval, days[, exchange])``."""
    if isinstance(dataset, Dataset):
        if interval is not None or days is not None or exchange not in (None, dataset.exchange):
            raise TypeError("pass either a Dataset or symbol, interval, days -- not both")
        return dataset
    if interval is None or days is None:
        raise TypeError(f"expected a Dataset, got {dataset!r} without interval and days")
    return Dataset(dataset, interval, days, exchange=exchange)


def _loose(dataset: Dataset | str, rest: tuple, exchange: str | None) -> tuple[Dataset, tuple]:
    """Split ``f(dataset, *rest)`` / the loose ``f(symbol, interval, days, *rest)`` call form."""
    if isinstance(dataset, Dataset):
        return as_dataset(dataset, exchange=exchange), rest
    if len(rest) < 2:
        raise TypeError(f"expected a Dataset (or symbol, interval, days), got {(dataset, *rest)!r}")
    return as_dataset(dataset, rest[0], rest[1], exchange=exchange), rest[2:]


def dataset_stem(dataset: Dataset) -> str:
    """``ethusdc_1h_365d``: :attr:`Dataset.stem`."""
    return as_dataset(dataset).stem


#: Kinds derived from a rule file: their names carry the rules name (``<stem>__<rules>_<kind>``).
RULE_KINDS = frozenset({"signals", "equity", "trades", "backtest", "stress"})
#: Research outputs of a rule file (reports, and the optimiser's ``best`` rule file): always named
#: ``<stem>__<rules>_<kind>`` too (older names: :func:`renamed_research_path`).
RESEARCH_KINDS = frozenset({"parity", "optimize", "walkforward", "walkforward_folds", "walkforward_equity",
                            "lookahead", "best"})
#: The default rule file of every command that takes ``--rules``.
DEFAULT_RULES = "S4/rules.yaml"
#: ``rules=LEGACY``: the name written before the rules-name convention (``<stem>_<kind>``).
LEGACY = ""


def rules_token(rules: str | Path | None = None) -> str:
    """The rules name used in file names: the rule file's stem, lower-case, ``[a-z0-9_-]`` only.

    >>> rules_token("S4/rules_ta_only.yaml"), rules_token(None), rules_token("My Rules.v2.yml")
    ('rules_ta_only', 'rules', 'my_rules_v2')
    """
    if rules is None:
        rules = DEFAULT_RULES
    name = Path(str(rules)).name
    for ext in (".yaml", ".yml"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    token = re.sub(r"_+", "_", re.sub(r"[^a-z0-9-]+", "_", name.lower())).strip("_")
    if not token:
        raise UserError(f"cannot name outputs after the rules file {str(rules)!r}",
                        "give the rule file a name with letters or digits, e.g. S4/my_rules.yaml")
    return token


def _rules_infix(kind: str, rules: str | Path | None) -> str:
    if kind not in RULE_KINDS or rules == LEGACY:
        return ""
    return f"__{rules_token(rules)}"


def dataset_path(dataset: Dataset | str, *kind_: str, kind: str | None = None, data_dir: Path | None = None,
                 exchange: str | None = None, rules: str | Path | None = None) -> Path:
    """Path of the file of ``kind`` (see :data:`KINDS`; default ``candles``) of ``dataset``:
    ``dataset_path(ds, "ta")``. The loose form ``dataset_path(symbol, interval, days, kind,
    exchange=...)`` is kept for callers that hold the three values (tests, one-off scripts).

    Kinds in :data:`RULE_KINDS` carry the rules name (``rules``: a rule file path or token;
    None: the default ``S4/rules.yaml``; :data:`LEGACY`: the old name without it)."""
    ds, rest = _loose(dataset, kind_, exchange)
    if len(rest) > 1 or (rest and kind is not None):
        raise TypeError(f"dataset_path() takes one kind, got {(*rest, kind)!r}")
    kind = rest[0] if rest else (kind or "candles")
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; one of {sorted(KINDS)}")
    suffix, ext = KINDS[kind]
    base = globals()["data_dir"](data_dir)
    return base / f"{ds.stem}{_rules_infix(kind, rules)}{suffix}{ext}"


def existing_dataset_path(dataset: Dataset, kind: str, *, rules: str | Path | None = None,
                          data_dir: Path | None = None, note: bool = True) -> Path:
    """The rules-named path of ``kind`` when it exists; else, for the default rules, a file written by
    the older convention (``<stem>_<kind>``, no rules name) when that exists -- with a one-line note on
    stderr so existing data is not orphaned; else the rules-named path (which the caller reports as
    missing). Another rules file never falls back: the old name cannot say which rules wrote it."""
    path = dataset_path(dataset, kind, data_dir=data_dir, rules=rules)
    if kind not in RULE_KINDS or path.exists() or rules_token(rules) != rules_token(None):
        return path
    legacy = dataset_path(dataset, kind, data_dir=data_dir, rules=LEGACY)
    if legacy.exists():
        if note:
            import sys

            print(f"note: reading {legacy.name} (written before outputs carried the rules name; "
                  f"re-run to get {path.name})", file=sys.stderr)
        return legacy
    return path


def parity_path(dataset: Dataset, *, data_dir: Path | None = None, rules: str | Path | None = None) -> Path:
    """``data/<stem>__<rules>_parity.json``: the backtest and paper trade lists of ``python S5/parity.py``.

    >>> parity_path(Dataset("BTCUSDT", "1h", 365), data_dir=Path("data")).as_posix()
    'data/btcusdt_1h_365d__rules_parity.json'
    """
    base = globals()["data_dir"](data_dir)
    return base / f"{as_dataset(dataset).stem}{_rules_infix('signals', rules)}_parity.json"


#: Export formats of candle datasets and their file extension (Parquet is the chained format).
EXPORT_EXTENSIONS: dict[str, str] = {"parquet": ".parquet", "csv": ".csv", "feather": ".feather", "sqlite": ".sqlite"}


def export_path(dataset: Dataset, fmt: str, *, gzip: bool = False, data_dir: Path | None = None) -> Path:
    """Path of a candle export beside the dataset: ``data/<stem>.csv[.gz]|.feather|.sqlite``.

    >>> export_path(Dataset("ETHUSDC", "1h", 365), "csv", gzip=True, data_dir=Path("data")).as_posix()
    'data/ethusdc_1h_365d.csv.gz'
    """
    if fmt not in EXPORT_EXTENSIONS:
        raise UserError(f"unknown --format {fmt!r}", f"use one of {', '.join(EXPORT_EXTENSIONS)}")
    if gzip and fmt != "csv":
        raise UserError(f"--gzip applies to --format csv only, not {fmt}", "drop --gzip or use --format csv")
    base = local_dir(data_dir) if fmt == "sqlite" else globals()["data_dir"](data_dir)
    ext = EXPORT_EXTENSIONS[fmt] + (".gz" if gzip else "")
    return base / f"{as_dataset(dataset).stem}{ext}"


def lake_dir(*, data_dir: Path | None = None) -> Path:
    """``data/lake``: the 1m lake and its derived intervals (see ``S1/README_lake.md``)."""
    return globals()["data_dir"](data_dir) / "lake"


def lake_path(exchange: str, market: str, symbol: str, interval: str, month: str, *,
              data_dir: Path | None = None) -> Path:
    """One monthly lake partition: ``data/lake/<exchange>/<market>/<SYMBOL>/<interval>/<YYYY-MM>.parquet``.

    >>> lake_path("binance", "spot", "btcusdt", "1m", "2024-01", data_dir=Path("data")).as_posix()
    'data/lake/binance/spot/BTCUSDT/1m/2024-01.parquet'
    """
    if not re.fullmatch(r"[a-z0-9-]+", str(exchange)) or not re.fullmatch(r"[a-z]+", str(market)):
        raise UserError(f"invalid lake exchange/market {exchange!r}/{market!r}", "e.g. binance/spot or okx/swap")
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", str(month)):
        raise UserError(f"invalid lake month {month!r}", "use YYYY-MM, e.g. 2024-01")
    return lake_dir(data_dir=data_dir) / exchange / market / normalize_symbol(symbol) / \
        interval_token(interval) / f"{month}.parquet"


def report_path(dataset: Dataset | str, *name_ext: str, exchange: str | None = None, reports: Path | None = None,
                rules: str | Path | None = None) -> Path:
    """``reports/<stem>_<name>.<ext>`` (``report_path(ds, name, ext="html")``; the loose form
    ``report_path(symbol, interval, days, name, ext)`` is kept as for :func:`dataset_path`).
    A report of a rule-derived kind (:data:`RULE_KINDS` and :data:`RESEARCH_KINDS`) carries
    the rules name: ``reports/ethusdc_1h_365d__rules_backtest.html``.

    >>> report_path(Dataset("ETHUSDC", "1h", 365), "backtest", reports=Path("reports")).name
    'ethusdc_1h_365d__rules_backtest.html'
    >>> report_path(Dataset("ETHUSDC", "1h", 365), "walkforward_folds", "parquet", rules="S4/rules_ta_only.yaml",
    ...             reports=Path("reports")).name
    'ethusdc_1h_365d__rules_ta_only_walkforward_folds.parquet'
    """
    ds, rest = _loose(dataset, name_ext, exchange)
    if not 1 <= len(rest) <= 2:
        raise TypeError(f"report_path() takes a name and an optional extension, got {rest!r}")
    name, ext = rest[0], (rest[1] if len(rest) > 1 else "html")
    base = Path(reports) if reports is not None else reports_dir()
    infix = _rules_infix(name if name not in RESEARCH_KINDS else "signals", rules)
    return base / f"{ds.stem}{infix}_{name}.{ext}"


def portfolio_path(name: str, kind: str, *, data_dir: Path | None = None, reports: Path | None = None) -> Path:
    """The files of ``python S5/portfolio.py --name NAME``: ``kind`` ``equity`` / ``trades``
    (``data/portfolio_<name>_<kind>.parquet``), ``backtest`` (``.json``) or ``report``
    (``reports/portfolio_<name>.html``).

    >>> portfolio_path("Majors", "trades", data_dir=Path("data")).as_posix()
    'data/portfolio_majors_trades.parquet'
    """
    token = str(name).strip().lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,60}", token):
        raise UserError(f"invalid portfolio name {name!r}", "use letters, digits, '-' and '_' (e.g. --name majors)")
    if kind == "report":
        return (Path(reports) if reports is not None else reports_dir()) / f"portfolio_{token}.html"
    ext = {"equity": ".parquet", "trades": ".parquet", "backtest": ".json", "optimize": ".json",
           "walkforward": ".json", "paper": ".json"}.get(kind)
    if ext is None:
        raise ValueError(f"unknown portfolio file kind {kind!r}; one of equity, trades, backtest, optimize, "
                         "walkforward, paper, report")
    return globals()["data_dir"](data_dir) / f"portfolio_{token}_{kind}{ext}"


def realtime_db_path(symbols: list[str] | str, interval: str, *, kind: str = "kline",
                     exchange: str | None = None, data_dir: Path | None = None) -> Path:
    """The streamer's SQLite file: ``btcusdt_1m_realtime.db`` (the first symbol names it);
    ``kind="trades"`` (candles built from trades) gives ``btcusdt_1m_trades_realtime.db``;
    another exchange prefixes its token as in dataset names (``okx_btcusdt_1m_realtime.db``).

    >>> realtime_db_path("BTC/USDT", "1m", exchange="okx-swap", data_dir=Path("data")).name
    'okx-swap_btcusdt_1m_realtime.db'
    """
    first = symbols if isinstance(symbols, str) else symbols[0]
    base = local_dir(data_dir)
    infix = "_trades" if kind == "trades" else ""
    prefix = "" if exchange in (None, "", "binance") else f"{exchange.lower()}_"
    return base / f"{prefix}{normalize_symbol(first).lower()}_{interval_token(interval)}{infix}_realtime.db"


def book_realtime_path(symbols: list[str] | str, *, fmt: str = "sqlite", exchange: str | None = None,
                       data_dir: Path | None = None) -> Path:
    """Where ``S1/streamer.py --streams depth,...`` records books and tickers: the SQLite file
    ``btcusdt_book_realtime.db``, or for Parquet/Feather the folder ``btcusdt_book_realtime``.

    >>> book_realtime_path(["BTCUSDT", "ETHUSDT"], data_dir=Path("data")).name
    'btcusdt_book_realtime.db'
    """
    first = symbols if isinstance(symbols, str) else symbols[0]
    prefix = "" if exchange in (None, "", "binance") else f"{exchange.lower()}_"
    name = f"{prefix}{normalize_symbol(first).lower()}_book_realtime"
    return local_dir(data_dir) / (f"{name}.db" if fmt == "sqlite" else name)


def sentiment_path(interval: str = "1h", *, asset: str | None = None, data_dir: Path | None = None) -> Path:
    """S3's market-wide series ``sentiment_<interval>.parquet``, or with ``asset`` the
    series of the news tagged with that asset, ``sentiment_<asset>_<interval>.parquet``.

    >>> sentiment_path("1h", data_dir=Path("data")).name
    'sentiment_1h.parquet'
    >>> sentiment_path("1h", asset="BTC", data_dir=Path("data")).name
    'sentiment_btc_1h.parquet'
    """
    base = globals()["data_dir"](data_dir)
    if asset is None:
        return base / f"sentiment_{interval_token(interval)}.parquet"
    token = str(asset).strip().upper()
    if not re.fullmatch(r"(?=.*[A-Z])[A-Z0-9]{2,15}", token):
        raise UserError(f"invalid asset {asset!r} for a sentiment file",
                        "use a base asset code such as BTC, ETH or 1INCH (2-15 letters and digits)")
    return base / f"sentiment_{token.lower()}_{interval_token(interval)}.parquet"


def sentiment_asset_paths(interval: str = "1h", *, data_dir: Path | None = None) -> dict[str, Path]:
    """The per-asset sentiment files of ``interval`` present: ``{"BTC": .../sentiment_btc_1h.parquet}``."""
    base = globals()["data_dir"](data_dir)
    tok = interval_token(interval)
    out: dict[str, Path] = {}
    for p in sorted(base.glob(f"sentiment_*_{tok}.parquet")):
        asset = p.name[len("sentiment_"):-len(f"_{tok}.parquet")].upper()
        try:
            if sentiment_path(interval, asset=asset, data_dir=base) == p:
                out[asset] = p
        except UserError:
            continue
    return out


def news_items_path(*, data_dir: Path | None = None) -> Path:
    return globals()["data_dir"](data_dir) / "news_items.parquet"


def funding_path(symbol: str, *, data_dir: Path | None = None) -> Path:
    """``S1/funding.py``'s USD-M funding-rate history of ``symbol`` (one file per contract, grown
    incrementally): ``data/btcusdt_funding.parquet``.

    >>> funding_path("btcusdt", data_dir=Path("data")).name
    'btcusdt_funding.parquet'
    """
    return globals()["data_dir"](data_dir) / f"{normalize_symbol(symbol).lower()}_funding.parquet"


def open_interest_path(symbol: str, period: str, *, data_dir: Path | None = None) -> Path:
    """``S1/funding.py --open-interest 1h``'s USD-M open-interest history of ``symbol`` at ``period``:
    ``data/btcusdt_open_interest_1h.parquet``.

    >>> open_interest_path("BTCUSDT", "5m", data_dir=Path("data")).name
    'btcusdt_open_interest_5m.parquet'
    """
    return (globals()["data_dir"](data_dir)
            / f"{normalize_symbol(symbol).lower()}_open_interest_{interval_token(period)}.parquet")


def orders_log_path(*, data_dir: Path | None = None) -> Path:
    return local_dir(data_dir) / "orders.jsonl"


def archive_cache_dir(*, data_dir: Path | None = None) -> Path:
    return local_dir(data_dir) / "archive"


def models_dir(*, data_dir: Path | None = None) -> Path:
    return local_dir(data_dir) / "models"


def llm_cache_path(*, data_dir: Path | None = None) -> Path:
    """S3's LLM verdict cache (content hash + model -> label)."""
    return local_dir(data_dir) / "cache" / "llm_sentiment.sqlite"


def sentiment_report_path(interval: str, *, reports: Path | None = None) -> Path:
    """``reports/sentiment_<interval>.html``."""
    base = Path(reports) if reports is not None else reports_dir()
    return base / f"sentiment_{interval_token(interval)}.html"


def exchange_info_path(*, data_dir: Path | None = None) -> Path:
    """Cached ``GET /api/v3/exchangeInfo`` body (symbols, filters, rate limits)."""
    return local_dir(data_dir) / "exchange_info.json"


def leverage_brackets_path(symbol: str, *, data_dir: Path | None = None) -> Path:
    """S7's cache of ``symbol``'s USD-M ``GET /fapi/v1/leverageBracket`` answer (the liquidation rule's
    maintenance margin): ``data/btcusdt_leverage_brackets.json``.

    >>> leverage_brackets_path("btcusdt", data_dir=Path("data")).name
    'btcusdt_leverage_brackets.json'
    """
    return local_dir(data_dir) / f"{normalize_symbol(symbol).lower()}_leverage_brackets.json"


def best_rules_path(dataset: Dataset, rules: str | Path, *, data_dir: Path | None = None) -> Path:
    """S5's optimised rule file: ``data/<stem>__<rules>_best.yaml``.

    >>> best_rules_path(Dataset("ETHUSDC", "1h", 365), "S4/rules.yaml", data_dir=Path("data")).as_posix()
    'data/ethusdc_1h_365d__rules_best.yaml'
    """
    return globals()["data_dir"](data_dir) / f"{as_dataset(dataset).stem}__{rules_token(rules)}_best.yaml"


_LEGACY_RESEARCH = re.compile(
    r"(?P<stem>(?:[a-z0-9-]+_)?[a-z0-9]{2,30}_[0-9]+[a-z]+_[0-9]+d)_(?P<kind>optimize|best|walkforward|lookahead)"
    r"_(?P<rules>[a-z0-9-]+(?:_[a-z0-9-]+)*?)(?P<part>_folds|_equity)?(?P<ext>\.(?:json|html|yaml|parquet))")


def renamed_research_path(path: str | Path) -> Path | None:
    """For an optimiser / walk-forward / look-ahead output named the way it was before every
    rule-derived output carried the rules name the one way -- ``<stem>_optimize_<rules>.json``,
    ``<stem>_best_<rules>.yaml``, ``<stem>_walkforward_<rules>[_folds|_equity].<ext>``,
    ``<stem>_lookahead_<rules>.json`` -- the path it has now (``<stem>__<rules>_<kind>...``);
    None for any other name. Readers use it to still find (and name) runs written before.

    >>> renamed_research_path(Path("reports/btcusdt_1h_30d_walkforward_rules_ta_only_equity.parquet")).name
    'btcusdt_1h_30d__rules_ta_only_walkforward_equity.parquet'
    >>> renamed_research_path("data/okx_btcusdt_4h_30d_best_rules.yaml").name
    'okx_btcusdt_4h_30d__rules_best.yaml'
    >>> renamed_research_path("reports/btcusdt_1h_30d__rules_optimize.json") is None    # already the new name
    True
    """
    path = Path(path)
    m = _LEGACY_RESEARCH.fullmatch(path.name)
    if m is None or "__" in path.name:
        return None
    return path.with_name(f"{m['stem']}__{m['rules']}_{m['kind']}{m['part'] or ''}{m['ext']}")


def optuna_storage_url(*, data_dir: Path | None = None) -> str:
    """S5's default Optuna storage: ``sqlite:///<data dir>/optuna.db`` (folder created)."""
    d = local_dir(data_dir)
    check_writable(d, what="the Optuna study database optuna.db")
    return f"sqlite:///{(d / 'optuna.db').as_posix()}"


def check_writable(folder: Path, *, what: str = "files") -> Path:
    """Create ``folder`` if needed and prove it takes a file (a probe, since permission bits
    do not tell for root or read-only mounts); a :class:`UserError` naming it otherwise."""
    if is_remote(folder):
        return as_path(folder)   # an object store: nothing to create; a write error names the bucket
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UnwritableError(f"cannot write {what} in {folder} ({exc.strerror or type(exc).__name__})",
                              f"make {folder} writable, or point DATA_DIR at a writable folder") from None
    return folder


def executor_state_path(tag: str, symbol: str, interval: str, *, replay: bool = False,
                        data_dir: Path | None = None) -> Path:
    """S7's SQLite store of orders, fills and positions: ``data/state/[replay/]s7_<tag>_<symbol>_<interval>.db``."""
    folder = state_path("replay" if replay else "", data_dir=data_dir)
    return folder / f"s7_{tag}_{normalize_symbol(symbol).lower()}_{interval_token(interval)}.db"


def kill_switch_path(mode: str, *, symbol: str | None = None, interval: str | None = None, replay: bool = False,
                     data_dir: Path | None = None) -> Path:
    """The persisted kill-switch state: one per trading mode (``live``, ``testnet``, ``dry-run``);
    a replay gets its own throw-away one per market."""
    if replay:
        return state_path("replay", data_dir=data_dir) / (
            f"kill_switch_{normalize_symbol(symbol or '').lower()}_{interval_token(interval or '1m')}.json")
    name = {"live": "kill_switch.json", "testnet": "kill_switch_testnet.json"}.get(mode, "kill_switch_dryrun.json")
    return state_path(name, data_dir=data_dir)


def state_path(name: str, *, data_dir: Path | None = None) -> Path:
    """Small state files (kill-switch, executor DB …) under ``data/state/``."""
    return local_dir(data_dir) / "state" / name


@dataclass(frozen=True)
class DatasetName:
    """The parts of a dataset file name (``[exchange_]symbol_interval_<days>d[_kind]``)."""

    symbol: str
    interval: str
    days: int
    kind: str = "candles"
    exchange: str | None = None
    #: the rules token of a rule-derived file (``rules_ta_only``); None for the default rules
    #: (``S4/rules.yaml``) and for kinds not derived from rules; :data:`LEGACY` (``""``) for a
    #: rule-derived file named before the convention
    rules: str | None = None

    def __repr__(self) -> str:
        extra = "" if self.rules is None else f", rules={self.rules!r}"
        return (f"DatasetName(symbol={self.symbol!r}, interval={self.interval!r}, days={self.days!r}, "
                f"kind={self.kind!r}, exchange={self.exchange!r}{extra})")

    @property
    def dataset(self) -> Dataset:
        """The market and window this file belongs to."""
        return Dataset(self.symbol, self.interval, self.days, exchange=self.exchange)

    def path(self, kind: str | None = None) -> Path:
        return dataset_path(self.dataset, kind or self.kind, rules=self.rules)

    @property
    def label(self) -> str:
        ex = f"{self.exchange}:" if self.exchange else ""
        rules = f" [{self.rules}]" if self.rules else ""
        return f"{ex}{self.symbol} {self.interval} {self.days}d{rules}"


_SUFFIX_TO_KIND = {suffix.lstrip("_"): kind for kind, (suffix, ext) in KINDS.items()
                   if suffix and ext == ".parquet"}
#: the JSON dataset kinds (``_backtest.json``, ``_stress.json``), also parsed by :func:`parse_dataset_name`
_JSON_SUFFIX_TO_KIND = {suffix.lstrip("_"): kind for kind, (suffix, ext) in KINDS.items() if ext == ".json"}


def parse_dataset_name(name: str | Path) -> DatasetName | None:
    """Inverse of :func:`dataset_path` for Parquet datasets (None if ``name`` is not one).

    >>> parse_dataset_name("okx_btcusdt_1h_30d_ta.parquet")
    DatasetName(symbol='BTCUSDT', interval='1h', days=30, kind='ta', exchange='okx')
    >>> parse_dataset_name("btcusdt_1h_365d__rules_ta_only_signals.parquet").rules
    'rules_ta_only'
    >>> parse_dataset_name("btcusdt_1h_365d_trades.parquet").rules   # the older convention
    ''
    >>> parse_dataset_name("btcusdt_1h_365d__rules_backtest.json").kind
    'backtest'
    >>> parse_dataset_name("sentiment_1h.parquet") is None
    True
    """
    name = Path(name).name
    if name.startswith("."):
        return None
    if name.endswith(".parquet"):
        stem, suffixes = name[: -len(".parquet")], _SUFFIX_TO_KIND
    elif name.endswith(".json"):     # the JSON kinds: a name with one of their suffixes
        stem, suffixes = name[: -len(".json")], _JSON_SUFFIX_TO_KIND
        if stem.rsplit("_", 1)[-1] not in suffixes:
            return None
    else:
        return None
    rules: str | None = None
    if "__" in stem:
        stem, tail = stem.split("__", 1)
        kind_token = tail.rsplit("_", 1)[-1] if "_" in tail else ""
        kind = suffixes.get(kind_token)
        if kind not in RULE_KINDS:
            return None
        rules = tail[: -len(kind_token) - 1]
        if not re.fullmatch(r"[a-z0-9-]+(?:_[a-z0-9-]+)*", rules):
            return None
        if rules == rules_token(None):
            rules = None          # the default rules: DatasetName(..., rules=None).path() is this name
        parts = stem.split("_")
    else:
        parts = stem.split("_")
        kind = "candles"
        if parts and parts[-1] in suffixes:
            kind = suffixes[parts.pop()]
            if kind in RULE_KINDS:
                rules = LEGACY
    if len(parts) not in (3, 4):
        return None
    *head, symbol, token, days = parts
    interval = "1M" if token == "1mo" else token
    if interval not in INTERVALS or (interval == "1M" and token != "1mo"):
        return None
    if not (days.endswith("d") and days[:-1].isdigit() and int(days[:-1]) > 0):
        return None
    if not re.fullmatch(r"[a-z0-9]{2,30}", symbol):
        return None
    return DatasetName(symbol.upper(), interval, int(days[:-1]), kind, head[0] if head else None, rules)


# --------------------------------------------------------------------------- schema
def empty_candles() -> pd.DataFrame:
    return candles_from_arrays(np.empty((0, 12)))


def candles_from_arrays(rows: np.ndarray) -> pd.DataFrame:
    """Candle frame from an ``(n, >=11)`` numeric array in the Binance kline row layout
    (open_time ms, o, h, l, c, v, close_time ms, quote_volume, trades, taker base, taker quote)."""
    rows = np.asarray(rows)
    open_ms = rows[:, 0].astype(np.int64)
    frame = pd.DataFrame(
        {
            "open": rows[:, 1].astype(np.float64),
            "high": rows[:, 2].astype(np.float64),
            "low": rows[:, 3].astype(np.float64),
            "close": rows[:, 4].astype(np.float64),
            "volume": rows[:, 5].astype(np.float64),
            "close_time": pd.to_datetime(rows[:, 6].astype(np.int64), unit="ms", utc=True).as_unit("ns"),
            "quote_volume": rows[:, 7].astype(np.float64),
            "trades": rows[:, 8].astype(np.float64).astype(np.int64),
            "taker_buy_base": rows[:, 9].astype(np.float64),
            "taker_buy_quote": rows[:, 10].astype(np.float64),
        },
        index=pd.DatetimeIndex(pd.to_datetime(open_ms, unit="ms", utc=True).as_unit("ns"), name="open_time"),
    )
    return frame


def candles_to_rows(df: pd.DataFrame) -> np.ndarray:
    """Candle frame -> ``(n, 11)`` float rows in the Binance kline layout (inverse of
    :func:`candles_from_arrays`)."""
    open_ms = df.index.as_unit("ms").asi8.astype(np.float64)
    close_ms = pd.DatetimeIndex(df["close_time"]).as_unit("ms").asi8.astype(np.float64)
    return np.column_stack([
        open_ms, df["open"], df["high"], df["low"], df["close"], df["volume"], close_ms,
        df["quote_volume"], df["trades"], df["taker_buy_base"], df["taker_buy_quote"],
    ]).astype(np.float64)


def validate_candles(df: pd.DataFrame, *, what: str = "candles") -> pd.DataFrame:
    """Check and normalise a candle frame to the schema; raise :class:`UserError` if
    it cannot be. Returns a frame with the canonical column order and dtypes."""
    missing = [c for c in CANDLE_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{what}: missing columns {missing}",
                        f"a candle frame needs {list(CANDLE_COLUMNS)} (as written by S1/historical.py)")
    if not isinstance(df.index, pd.DatetimeIndex):
        raise UserError(f"{what}: the index must be the UTC open_time", "use df.set_index('open_time')")
    idx = df.index
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    if not idx.is_unique:
        raise UserError(f"{what}: {int(idx.duplicated().sum())} duplicate open times",
                        "deduplicate with df[~df.index.duplicated()]")
    if not idx.is_monotonic_increasing:
        raise UserError(f"{what}: open times are not increasing", "sort with df.sort_index()")
    out = df.loc[:, list(CANDLE_COLUMNS) + [c for c in df.columns if c not in CANDLE_COLUMNS]]  # a new frame
    out.index = idx.as_unit("ns").rename("open_time")
    for c in FLOAT_COLUMNS:
        out[c] = out[c].astype(np.float64)
    out["trades"] = out["trades"].astype(np.int64)
    ct = pd.DatetimeIndex(out["close_time"])
    out["close_time"] = (ct.tz_localize("UTC") if ct.tz is None else ct.tz_convert("UTC")).as_unit("ns")
    return out


# ------------------------------------------------------------------------------ I/O
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


class UnwritableError(UserError, OSError):
    """A data file could not be written (read-only or full folder): a :class:`UserError`
    naming the folder, still an :class:`OSError` for callers that catch those."""

    def __init__(self, problem: str, fix: str | None = None):
        UserError.__init__(self, problem, fix)


def _unwritable(path: Path, exc: OSError) -> UserError:
    folder = path.parent
    why = exc.strerror or str(exc) or type(exc).__name__
    return UnwritableError(f"cannot write {path.name} in {folder} ({why}); {path} was left as it was",
                           f"make {folder} writable (or free space there), or point DATA_DIR / --out at a "
                           "writable folder")


def _locked(fd: int) -> bool:
    """Take the writer's lock on a temp file (released when its process ends, even by SIGKILL)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def clean_stale_temps(path: Path) -> list[Path]:
    """Remove the temp files a killed writer of ``path`` left (``.<name>.*.tmp`` beside it
    whose writer's lock is free); the temp file of a writer still running is kept."""
    if is_remote(path):
        return []   # an object store has no temp files: an object is written in one request
    path = Path(path)
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob_escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _locked(fd):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _atomic_target(path: Path) -> tuple[Path, int]:
    """A temp file beside ``path`` with the permissions a plain ``open()`` would give, locked
    by this process while it writes; stale temp files of killed writers are removed first.
    A folder that cannot be written raises a :class:`UserError` naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    _locked(fd)
    os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600 files; data and reports are for sharing
    return Path(tmp), fd


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename (on S3: the
    whole object in one request, see :meth:`S1.storage.S3Path.write_bytes`)."""
    if is_remote(path):
        return _s3_put(as_path(path), data)
    path = Path(path)
    tmp, fd = _atomic_target(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(tmp, path)     # still holding the lock: never taken for a stale temp
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _unwritable(path, exc) from None
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_parquet(df: pd.DataFrame, path: Path, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``df`` (index kept) to ``path`` atomically; ``metadata`` is stored as JSON
    under the ``toolkit`` key of the Parquet schema metadata."""
    path = as_path(path)
    table = pa.Table.from_pandas(df, preserve_index=True)
    table = table.cast(_ms_timestamps(table.schema))
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta[META_KEY] = json.dumps(metadata, default=str).encode()
        table = table.replace_schema_metadata(meta)
    if isinstance(path, S3Path):   # serialised whole in memory, then one request: no partial object
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        return _s3_put(path, sink.getvalue())
    tmp, fd = _atomic_target(path)
    try:
        pq.write_table(table, tmp, compression="zstd")   # our fd (and its lock) stays open meanwhile
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _unwritable(path, exc) from None
        raise
    finally:
        os.close(fd)
    return path


def _s3_put(path: S3Path, data) -> S3Path:
    try:
        path.write_bytes(data)
    except UserError as exc:     # the store cannot be reached
        raise UnwritableError(f"{exc.problem}; {path} was left as it was", exc.fix) from None
    except OSError as exc:
        raise UnwritableError(f"cannot write {path} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                              "the object was left as it was",
                              "check the bucket exists and S3_ENDPOINT_URL / S3_ACCESS_KEY_ID / "
                              "S3_SECRET_ACCESS_KEY allow writing there") from None
    return path


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (it starts with ``= + - @``, a tab or
    a carriage return) gets a leading ``'``; anything else is returned as is (OWASP CSV injection).

    >>> spreadsheet_safe("=SUM(A1:A2)"), spreadsheet_safe("-5% BTC"), spreadsheet_safe("BTC up"), spreadsheet_safe(-1)
    ("'=SUM(A1:A2)", "'-5% BTC", 'BTC up', -1)
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_text(df: pd.DataFrame, **kw) -> str:
    """``df.to_csv(**kw)`` with every text cell made :func:`spreadsheet_safe` (numbers untouched)."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object or pd.api.types.is_string_dtype(out[c].dtype):
            out[c] = out[c].map(spreadsheet_safe)
    return out.to_csv(**kw)


def _ms_timestamps(schema: pa.Schema) -> pa.Schema:
    """Store UTC timestamps at ms resolution (Binance's own) to keep files small."""
    fields = []
    for f in schema:
        if pa.types.is_timestamp(f.type) and f.type.unit in ("us", "ns"):
            f = f.with_type(pa.timestamp("ms", tz=f.type.tz))
        fields.append(f)
    return pa.schema(fields, metadata=schema.metadata)


def regenerate_command(path: Path) -> str | None:
    """The command that writes ``path`` again, when its name says (candles, indicators,
    signals, ML probabilities, backtest, sentiment), else None."""
    name = as_path(path).name
    ds = parse_dataset_name(name)
    if ds is not None:
        args = f"--symbol {ds.symbol} --interval {ds.interval} --days {ds.days}"
        return {"candles": f"python S1/historical.py {_venue_args(ds.exchange)}{args}",
                "ta": f"python S2/indicators.py {args}",
                "signals": f"python S4/decision.py {args} --rules {_rules_arg(ds.rules)}",
                "ml": f"python S4/model.py {args}",
                "equity": f"python S5/backtest.py {args} --rules {_rules_arg(ds.rules)}",
                "trades": f"python S5/backtest.py {args} --rules {_rules_arg(ds.rules)}"}.get(ds.kind)
    m = re.fullmatch(r"sentiment_(?:[a-z0-9]+_)?([0-9]+[a-z]+)\.parquet", name)
    if m:
        return f"python S3/sentiment.py --interval {'1M' if m.group(1) == '1mo' else m.group(1)}"
    return None


def _rules_arg(token: str | None) -> str:
    """The ``--rules`` argument that wrote a file whose rules token is ``token`` (S4/<token>.yaml)."""
    return DEFAULT_RULES if not token else f"S4/{token}.yaml"


def unreadable(path: Path, exc: BaseException) -> UserError:
    """The one message for a data file that cannot be read: which file, corrupt or not
    readable, and the command that writes it again."""
    path = as_path(path)
    cmd = regenerate_command(path)
    fix = (f"regenerate it: move it away, then run {cmd}" if cmd
           else "move it away and re-run the step that writes it")
    if isinstance(exc, PermissionError):
        return UserError(f"{path} cannot be read (permission denied)", f"make it readable, or {fix}")
    size = path.stat().st_size if path.exists() else None
    what = "empty (0 bytes)" if size == 0 else "corrupt or truncated (not a readable Parquet file)"
    return UserError(f"{path} is {what}", fix)


def _s3_source(path: S3Path, fn):
    """What pyarrow reads for an object: the whole body for a table (one GET), a seekable
    file for the schema / metadata (the footer only)."""
    if fn is pq.read_table:
        return pa.BufferReader(path.read_bytes())
    return path.open("rb")


def _readable(fn, path: Path, *args, **kw):
    if is_remote(path):
        path = as_path(path)
        try:
            return fn(_s3_source(path, fn), *args, **kw)
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError, ValueError) as exc:
            if fn is not pq.read_schema:
                try:
                    pq.read_schema(_s3_source(path, pq.read_schema))
                except (pa.ArrowException, OSError, ValueError):
                    raise unreadable(path, exc) from None
                raise
            raise unreadable(path, exc) from None
    try:
        return fn(path, *args, **kw)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        if fn is not pq.read_schema:
            try:
                pq.read_schema(path)      # the file is sound: the request was wrong (a missing column ...)
            except (pa.ArrowException, OSError, ValueError):
                raise unreadable(path, exc) from None
            raise
        raise unreadable(path, exc) from None


def read_parquet(path: Path, *, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a toolkit Parquet file; timestamps come back as ``datetime64[ns, UTC]``.
    A corrupt, truncated, empty or unreadable file raises a :class:`UserError` naming it
    and the command that writes it again (:func:`unreadable`)."""
    table = _readable(pq.read_table, path, columns=columns)
    df = table.to_pandas(split_blocks=True, self_destruct=True)
    if isinstance(df.index, pd.DatetimeIndex):
        df.index = df.index.as_unit("ns")
    for c in df.columns:
        if isinstance(df[c].dtype, pd.DatetimeTZDtype):
            df[c] = df[c].dt.as_unit("ns")
    return df


def parquet_rows(path: Path) -> int:
    """The number of rows of a Parquet file (from its footer; local or S3)."""
    return _readable(pq.read_metadata, path).num_rows


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``toolkit`` metadata dict of a Parquet file ({} if none)."""
    meta = _readable(pq.read_schema, path).metadata or {}
    raw = meta.get(META_KEY)
    try:
        return json.loads(raw) if raw else {}
    except ValueError as exc:
        raise unreadable(path, exc) from None


def read_candles(path: Path, *, how_to_create: str | None = None) -> pd.DataFrame:
    """Read and validate a candle file; a missing file names the command that creates it."""
    path = as_path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist",
                        f"create it first with: {how_to_create}" if how_to_create else "run S1/historical.py first")
    return validate_candles(read_parquet(path), what=str(path))


def history_command(dataset: Dataset) -> str:
    """The exact S1 command that writes the candle file of a dataset.

    >>> history_command(Dataset("btc/usdt", "1h", 30))
    'python S1/historical.py --symbol BTCUSDT --interval 1h --days 30'
    """
    ds = as_dataset(dataset)
    return f"python S1/historical.py {_venue_args(ds.exchange)}{ds.args}"


def _venue_args(token: str | None) -> str:
    """``okx-swap-mark`` (a file-name prefix) -> ``--exchange okx --market swap --price mark ``."""
    if not token:
        return ""
    exchange, *rest = token.split("-")
    opts = [f"--exchange {exchange}"]
    for part in rest:
        opts.append(f"--price {part}" if part in ("mark", "index") else f"--market {part}")
    return " ".join(opts) + " "


def indicators_command(dataset: Dataset) -> str:
    """The exact S2 command that writes the ``_ta`` file of a dataset."""
    return f"python S2/indicators.py {as_dataset(dataset).args}"
