"""Technical indicators on candle frames: TA-Lib kernels on numpy arrays, a frozen
config of lengths, and :func:`add_indicators` (``DataFrame -> DataFrame``) that S2's
scripts, S4, S7, the notebooks and the Streamlit app all reuse.

Columns keep pandas-ta names and follow the configured lengths (defaults shown)::

    sma50 ema21 rsi14 MACD_12_26_9 MACDh_12_26_9 MACDs_12_26_9
    BBL_20_2.0 BBM_20_2.0 BBU_20_2.0 BBB_20_2.0 BBP_20_2.0 atr14 natr14

Definitions (the tests check each against an independent numpy implementation):

- ``sma<n>``: mean of the last n closes.
- ``ema<n>``: EMA with alpha 2/(n+1), seeded with the SMA of the first n closes.
- ``rsi<n>``: Wilder's RSI: average gain/loss seeded with the mean of the first n
  changes, then ``avg = (avg*(n-1) + x) / n``. A frame whose close has not moved
  at all yet (0/0) gets the neutral 50 (TA-Lib would say 0, an "oversold" signal
  on a dead market).
- ``MACD_f_s_g = ema<f> - ema<s>``; ``MACDs`` = EMA<g> of the MACD line (seeded
  with its first g values); ``MACDh = MACD - MACDs``. Composed from TA-Lib EMAs on
  purpose: ``talib.MACD`` seeds its fast EMA on bars s-f..s-1 instead of 0..f-1,
  which differs from the textbook (and pandas-ta) by up to several dollars on
  BTC for the first ~150 bars.
- Bollinger Bands: ``BBM`` = SMA, ``BBU/BBL = BBM +/- k * population std``,
  ``BBB = (BBU-BBL)/BBM*100`` (bandwidth, %), ``BBP = (close-BBL)/(BBU-BBL)``
  (%B; 0.5 when the bands have zero width, i.e. a flat window).
- ``atr<n>``: Wilder ATR: true range from the second bar on, seeded with the mean
  of the first n true ranges; ``natr<n> = atr<n> / close * 100``.

Each column is NaN in its warm-up rows (:func:`warmup_rows`) and nowhere after.
Rows are used in order: a gap in the candles is not filled.

>>> import numpy as np, pandas as pd
>>> from S1.offline import simulate_candles
>>> candles = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-05")
>>> ta = add_indicators(candles, config=IndicatorConfig())
>>> ta.columns[-13:].tolist()[:4]
['sma50', 'ema21', 'rsi14', 'MACD_12_26_9']
>>> int(ta["MACDs_12_26_9"].isna().sum()) == warmup_rows(IndicatorConfig())["MACDs_12_26_9"] == 33
True
>>> IndicatorConfig(sma=(20, 200), macd=(8, 21, 5)).columns()[:3]
['sma20', 'sma200', 'ema21']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import talib

from S1.errors import UserError

DEFAULT_CONFIG_PATH = Path(__file__).with_name("config.yaml")
MAX_LENGTH = 100_000  # TA-Lib's upper bound for every period used here
PRICE_INPUTS = ("high", "low", "close")

__all__ = [
    "IndicatorConfig", "add_indicators", "compute_indicators", "load_config", "warmup_rows",
    "find_columns", "config_from_columns", "sma", "ema", "rsi", "macd", "bbands", "atr", "natr", "DEFAULT_CONFIG_PATH",
]


# ----------------------------------------------------------------------------- config
def _lengths(name: str, value: Any, *, minimum: int = 2, unique: bool = True) -> tuple[int, ...]:
    """``50`` / ``"20,50"`` / ``[20, 50]`` -> ``(20, 50)`` with a one-line error otherwise."""
    raw = value
    hint = f"e.g. --{name.split()[0]} 20,50 or `{name.split()[0]}: [20, 50]` in the YAML"
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [value]
    try:
        items = list(value)
        out = []
        for v in items:
            if isinstance(v, bool) or float(v) != int(float(v)):
                raise ValueError
            out.append(int(float(v)))
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{name}: {raw!r} is not a length or a list of lengths",
                        f"use whole numbers, {hint}") from None
    if not out:
        raise UserError(f"{name}: no length given", f"give at least one, {hint}")
    bad = [v for v in out if not minimum <= v <= MAX_LENGTH]
    if bad:
        raise UserError(f"{name}: length {bad[0]} is out of range",
                        f"use a whole number from {minimum} to {MAX_LENGTH}")
    if unique and len(set(out)) != len(out):
        raise UserError(f"{name}: duplicate length in {out}", "list each length once")
    return tuple(out)


def _fmt_std(std: float) -> str:
    """pandas-ta spells the band width as a float: 2 -> '2.0', 2.5 -> '2.5'."""
    return repr(float(std))


@dataclass(frozen=True)
class IndicatorConfig:
    """Lengths of every indicator (frozen, validated on creation).

    ``sma``, ``ema``, ``rsi`` and ``atr`` take one or several lengths (each adds
    its columns); ``macd`` is ``(fast, slow, signal)``; ``bbands`` is
    ``(length, std)``.

    >>> IndicatorConfig(rsi=7).rsi
    (7,)
    >>> IndicatorConfig(macd=(26, 12, 9))
    Traceback (most recent call last):
    ...
    S1.errors.UserError: macd: fast length 26 must be below slow length 12 -- e.g. --macd 12,26,9
    """

    sma: tuple[int, ...] = (50,)
    ema: tuple[int, ...] = (21,)
    rsi: tuple[int, ...] = (14,)
    macd: tuple[int, int, int] = (12, 26, 9)
    bbands: tuple[int, float] = (20, 2.0)
    atr: tuple[int, ...] = (14,)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "sma", _lengths("sma", self.sma))
        set_(self, "ema", _lengths("ema", self.ema))
        set_(self, "rsi", _lengths("rsi", self.rsi))
        set_(self, "atr", _lengths("atr", self.atr, minimum=1))
        macd = self.macd
        if isinstance(macd, Mapping):
            unknown = set(macd) - {"fast", "slow", "signal"}
            if unknown:
                raise UserError(f"macd: unknown key(s) {sorted(unknown)}", "use fast, slow and signal")
            macd = (macd.get("fast", 12), macd.get("slow", 26), macd.get("signal", 9))
        fast_slow_sig = _lengths("macd", macd, unique=False)
        if len(fast_slow_sig) != 3:
            raise UserError(f"macd: expected fast,slow,signal, got {macd!r}", "e.g. --macd 12,26,9")
        fast, slow, _sig = fast_slow_sig
        if fast >= slow:
            raise UserError(f"macd: fast length {fast} must be below slow length {slow}",
                            "e.g. --macd 12,26,9")
        set_(self, "macd", fast_slow_sig)
        bb = self.bbands
        if isinstance(bb, Mapping):
            unknown = set(bb) - {"length", "std"}
            if unknown:
                raise UserError(f"bbands: unknown key(s) {sorted(unknown)}", "use length and std")
            bb = (bb.get("length", 20), bb.get("std", 2.0))
        if isinstance(bb, str):
            bb = [v for v in bb.replace(" ", "").split(",") if v]
        try:
            length, std = list(bb)
            std = float(std)
        except (TypeError, ValueError):
            raise UserError(f"bbands: expected length,std, got {self.bbands!r}", "e.g. --bb 20,2") from None
        (length,) = _lengths("bbands length", [length])
        if not (np.isfinite(std) and 0 < std <= 10):
            raise UserError(f"bbands: std {std} is out of range", "use a positive number such as 2.0")
        set_(self, "bbands", (length, std))

    # -- names ------------------------------------------------------------------------
    @property
    def macd_names(self) -> tuple[str, str, str]:
        """``(MACD, MACDh, MACDs)`` column names."""
        f, s, g = self.macd
        return (f"MACD_{f}_{s}_{g}", f"MACDh_{f}_{s}_{g}", f"MACDs_{f}_{s}_{g}")

    @property
    def bb_names(self) -> tuple[str, str, str, str, str]:
        """``(BBL, BBM, BBU, BBB, BBP)`` column names."""
        n, k = self.bbands
        return tuple(f"BB{p}_{n}_{_fmt_std(k)}" for p in "LMUBP")  # type: ignore[return-value]

    def columns(self) -> list[str]:
        """Every indicator column this config adds, in output order."""
        return list(warmup_rows(self))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for YAML, JSON metadata); ``IndicatorConfig(**d)`` round-trips."""
        d = asdict(self)
        return {k: list(v) for k, v in d.items()}

    def with_overrides(self, **overrides: Any) -> "IndicatorConfig":
        """A copy with the non-``None`` overrides applied (validated)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def load_config(path: Path | str | None = None, **overrides: Any) -> IndicatorConfig:
    """Read the YAML of lengths (default ``S2/config.yaml``) and apply overrides.

    >>> load_config(rsi=7).rsi, load_config().sma
    ((7,), (50,))
    """
    import yaml

    from S1.yaml_load import safe_load

    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if not path.exists():
        raise UserError(f"config file {path} does not exist", f"pass --config with an existing YAML file "
                        f"(the default is {DEFAULT_CONFIG_PATH})")
    try:
        data = safe_load(path.read_text(encoding="utf-8"), source=str(path)) or {}
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not valid YAML ({first})",
                        "fix the file or pass another --config") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of indicator lengths", "e.g. `rsi: [14]` on one line")
    known = {f for f in IndicatorConfig.__dataclass_fields__}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"{path}: unknown key(s) {unknown}", f"use only {sorted(known)}")
    return IndicatorConfig(**data).with_overrides(**overrides)


def warmup_rows(config: IndicatorConfig) -> dict[str, int]:
    """Leading NaN rows of every indicator column (TA-Lib lookback), in output order.

    >>> w = warmup_rows(IndicatorConfig())
    >>> w["sma50"], w["ema21"], w["rsi14"], w["MACD_12_26_9"], w["MACDs_12_26_9"], w["atr14"]
    (49, 20, 14, 25, 33, 14)
    """
    out: dict[str, int] = {}
    out.update({f"sma{n}": n - 1 for n in config.sma})
    out.update({f"ema{n}": n - 1 for n in config.ema})
    out.update({f"rsi{n}": n for n in config.rsi})
    fast, slow, sig = config.macd
    line, hist, signal = config.macd_names
    out.update({line: slow - 1, hist: slow - 1 + sig - 1, signal: slow - 1 + sig - 1})
    out.update({name: config.bbands[0] - 1 for name in config.bb_names})
    for n in config.atr:
        out[f"atr{n}"] = n
        out[f"natr{n}"] = n
    return out


# ---------------------------------------------------------------------------- kernels
# Pure functions on float64 numpy arrays (TA-Lib underneath); NaN marks warm-up rows.
def _f64(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def sma(close: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average."""
    return talib.SMA(_f64(close), timeperiod=n)


def ema(close: np.ndarray, n: int) -> np.ndarray:
    """EMA, alpha 2/(n+1), seeded with the SMA of the first n values."""
    return talib.EMA(_f64(close), timeperiod=n)


def rsi(close: np.ndarray, n: int) -> np.ndarray:
    """Wilder RSI; 50 while the price has not moved since the first bar (0/0)."""
    close = _f64(close)
    out = talib.RSI(close, timeperiod=n)
    if len(close) > n and close[n] == close[0]:  # only then can the first values be 0/0
        moved = np.logical_or.accumulate(np.r_[False, close[1:] != close[:-1]])
        flat = ~moved
        flat[:n] = False
        out[flat] = 50.0
    return out


def macd(close: np.ndarray, fast: int, slow: int, signal: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(macd, histogram, signal)`` from TA-Lib EMAs (textbook seeding, see module doc)."""
    close = _f64(close)
    line = talib.EMA(close, timeperiod=fast)
    line -= talib.EMA(close, timeperiod=slow)  # in place: one 8-byte-per-row array fewer
    sig = talib.EMA(line, timeperiod=signal)  # TA-Lib skips the leading NaNs
    return line, line - sig, sig


def bbands(close: np.ndarray, n: int, std: float) -> tuple[np.ndarray, ...]:
    """``(lower, mid, upper, bandwidth %, percent b)``; population standard deviation."""
    close = _f64(close)
    upper, mid, lower = talib.BBANDS(close, timeperiod=n, nbdevup=std, nbdevdn=std, matype=0)
    width = upper - lower
    percent = np.subtract(close, lower)
    open_ = width != 0
    np.divide(percent, width, out=percent, where=open_)  # NaN stays NaN in the warm-up
    flat = np.logical_not(open_, out=open_)  # width == 0 (a NaN width is neither)
    percent[flat] = 0.5
    bandwidth = np.divide(width, mid, out=width)  # width is not needed any more: no new array
    bandwidth *= 100.0
    return lower, mid, upper, bandwidth, percent


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int) -> np.ndarray:
    """Wilder average true range."""
    return talib.ATR(_f64(high), _f64(low), _f64(close), timeperiod=n)


def natr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int) -> np.ndarray:
    """ATR as a percentage of the close."""
    return talib.NATR(_f64(high), _f64(low), _f64(close), timeperiod=n)


def compute_indicators(high: np.ndarray, low: np.ndarray, close: np.ndarray,
                       config: IndicatorConfig) -> dict[str, np.ndarray]:
    """Every indicator of ``config`` as ``{column: array}`` (no checks: see add_indicators)."""
    high, low, close = _f64(high), _f64(low), _f64(close)
    out: dict[str, np.ndarray] = {}
    for n in config.sma:
        out[f"sma{n}"] = sma(close, n)
    for n in config.ema:
        out[f"ema{n}"] = ema(close, n)
    for n in config.rsi:
        out[f"rsi{n}"] = rsi(close, n)
    out.update(zip(config.macd_names, macd(close, *config.macd)))
    out.update(zip(config.bb_names, bbands(close, *config.bbands)))
    for n in config.atr:
        a = atr(high, low, close, n)
        out[f"atr{n}"] = a
        natr_ = np.divide(a, close)  # = talib.NATR, without a second ATR pass
        natr_ *= 100.0
        out[f"natr{n}"] = natr_
    return out


# ---------------------------------------------------------------------------- wrapper
def check_candles(df: pd.DataFrame, *, config: IndicatorConfig, what: str = "candles") -> None:
    """Raise a one-line :class:`UserError` unless ``df`` can take the indicators of
    ``config``: high/low/close present, finite and positive; index increasing and
    unique; more rows than the longest warm-up."""
    if not isinstance(df, pd.DataFrame):
        raise UserError(f"{what}: expected a DataFrame, got {type(df).__name__}",
                        "pass a candle frame (index open_time, columns high low close ...)")
    missing = [c for c in PRICE_INPUTS if c not in df.columns]
    if missing:
        raise UserError(f"{what}: missing columns {missing}",
                        "indicators need high, low and close (a candle frame as written by S1/historical.py)")
    idx = df.index
    if not idx.is_unique:
        raise UserError(f"{what}: {int(idx.duplicated().sum())} duplicate open times",
                        "deduplicate with df[~df.index.duplicated()]")
    if not idx.is_monotonic_increasing:
        raise UserError(f"{what}: open times are not increasing", "sort with df.sort_index()")
    warm = warmup_rows(config)
    longest = max(warm, key=warm.get)
    need = warm[longest] + 1
    if len(df) < need:
        raise UserError(f"{what}: {len(df)} rows, fewer than the {need} that {longest} needs "
                        f"(warm-up {warm[longest]} rows + 1)",
                        "load a longer window (more --days) or use shorter lengths")
    for c in PRICE_INPUTS:
        col = df[c]  # float64 columns as they are (NaN already NaN); others converted, <NA> -> NaN
        a = col.to_numpy() if col.dtype == np.float64 else col.to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.isfinite(a) & (a > 0)
        if not ok.all():
            i = int(np.argmin(ok))
            raise UserError(f"{what}: column {c} has {int((~ok).sum())} missing or non-positive value(s), "
                            f"first at {idx[i]} ({a[i]})",
                            "re-download the window with S1/historical.py or drop those rows")


def add_indicators(df: pd.DataFrame, *, config: IndicatorConfig | None = None,
                   what: str = "candles") -> pd.DataFrame:
    """A copy of ``df`` (every column kept) with the indicator columns of ``config``
    appended (replacing columns of the same name). ``df`` itself is not changed.

    Works on any candle frame: an S1 file, a resampled frame, or the last N
    closed rows of the streamer's SQLite table (:func:`S2.sources.read_kline_sqlite`).
    Raises :class:`UserError` (one line) on frames it cannot use, see :func:`check_candles`.
    """
    if config is None:
        config = IndicatorConfig()
    if not isinstance(config, IndicatorConfig):
        raise UserError(f"config must be an IndicatorConfig, got {type(config).__name__}",
                        "build one with IndicatorConfig(...) or S2.ta.load_config()")
    check_candles(df, config=config, what=what)
    values = compute_indicators(df["high"].to_numpy(np.float64), df["low"].to_numpy(np.float64),
                                df["close"].to_numpy(np.float64), config)
    keep = df.drop(columns=[c for c in values if c in df.columns])
    new = pd.DataFrame(values, index=df.index, copy=False)
    return pd.concat([keep, new], axis=1)


# ---------------------------------------------------------------------------- lookup
@dataclass(frozen=True)
class FoundColumns:
    """Indicator columns present in a frame, grouped (see :func:`find_columns`)."""

    sma: tuple[str, ...] = ()
    ema: tuple[str, ...] = ()
    rsi: tuple[str, ...] = ()
    macd: tuple[str, str, str] | None = None        # (MACD, MACDh, MACDs)
    bbands: tuple[str, str, str, str, str] | None = None  # (L, M, U, B, P)
    atr: tuple[str, ...] = ()
    natr: tuple[str, ...] = ()


def _by_length(cols: Iterable[str], prefix: str) -> tuple[str, ...]:
    found = [c for c in cols if c.startswith(prefix) and c[len(prefix):].isdigit()]
    return tuple(sorted(found, key=lambda c: int(c[len(prefix):])))


def find_columns(columns: Iterable[str]) -> FoundColumns:
    """Group a frame's indicator columns by kind, whatever lengths made them.

    >>> f = find_columns(["close", "sma200", "sma50", "rsi14", "MACD_12_26_9", "MACDh_12_26_9",
    ...                   "MACDs_12_26_9", "atr14", "natr14"])
    >>> f.sma, f.macd, f.bbands
    (('sma50', 'sma200'), ('MACD_12_26_9', 'MACDh_12_26_9', 'MACDs_12_26_9'), None)
    """
    cols = [str(c) for c in columns]
    colset = set(cols)
    macd = None
    for c in cols:
        if c.startswith("MACD_"):
            tail = c[len("MACD_"):]
            if {f"MACDh_{tail}", f"MACDs_{tail}"} <= colset:
                macd = (c, f"MACDh_{tail}", f"MACDs_{tail}")
                break
    bb = None
    for c in cols:
        if c.startswith("BBL_"):
            tail = c[len("BBL_"):]
            names = tuple(f"BB{p}_{tail}" for p in "LMUBP")
            if set(names) <= colset:
                bb = names
                break
    return FoundColumns(sma=_by_length(cols, "sma"), ema=_by_length(cols, "ema"), rsi=_by_length(cols, "rsi"),
                        macd=macd, bbands=bb, atr=_by_length(cols, "atr"),  # type: ignore[arg-type]
                        natr=_by_length(cols, "natr"))


def config_from_columns(columns: Iterable[str]) -> IndicatorConfig:
    """The config whose columns these are (e.g. a ``_ta`` file without metadata);
    kinds with no column keep the defaults.

    >>> config_from_columns(IndicatorConfig(sma=(20, 200), bbands=(10, 2.5)).columns()).sma
    (20, 200)
    """
    f = find_columns(columns)
    kw: dict[str, Any] = {}
    for name, cols, cut in (("sma", f.sma, 3), ("ema", f.ema, 3), ("rsi", f.rsi, 3), ("atr", f.atr, 3)):
        if cols:
            kw[name] = tuple(int(c[cut:]) for c in cols)
    if f.macd:
        kw["macd"] = tuple(int(x) for x in f.macd[0].split("_")[1:])
    if f.bbands:
        length, std = f.bbands[0].split("_")[1:]
        kw["bbands"] = (int(length), float(std))
    return IndicatorConfig(**kw)

