"""From files to signals: join sentiment (as-of) and the ML score onto an indicator
frame, evaluate the rules, write the ``_signals`` file.

- :func:`asof_positions` / :func:`join_sentiment`: a candle opening at ``t`` gets the
  last sentiment row whose index is ``<= t`` -- never a later one. S3 guarantees
  that the row at ``t`` uses only news published before ``t``, so the joined value
  is known at the candle's open. Optional ``max_age`` leaves candles NaN when the
  last known row is older than that (a sentiment file that stopped updating).
- :func:`join_ml`: ``ml_proba`` on the same bars (exact open times), NaN where the
  ML file has no row.
- :func:`signals_frame`: frame + joins + :func:`S4.evaluate.evaluate` (pure; S5's
  look-ahead check and S7's executor call it on their own frames).
- :func:`load_rule_inputs`: the ``_ta`` file plus the sentiment / ML columns a rule
  file reads, checked and joined -- the one loader of S4's build, S5's optimiser and
  its walk-forward.
- :func:`build_signals`: the file job behind ``python S4/decision.py``.
- :func:`choose_sentiment_file` / :func:`find_sentiment_file`: which sentiment series a
  symbol reads -- ``scope="auto"`` (default) takes S3's per-asset series of the
  symbol's base asset (``BTCUSDT`` -> ``sentiment_btc_1h.parquet``, written by
  ``python S3/sentiment.py --per-symbol``) when it exists and is as recent as the
  market-wide one, else the market-wide ``sentiment_1h.parquet``; ``"asset"`` / ``"market"``
  force one. Without a per-asset file nothing changes.

>>> import pandas as pd
>>> candles = pd.DataFrame({"close": [1.0, 2.0, 3.0]},
...     index=pd.to_datetime(["2024-01-01 10:00", "2024-01-01 11:00", "2024-01-01 12:00"], utc=True))
>>> sent = pd.DataFrame({"sentiment_score": [0.5, -0.2]},
...     index=pd.to_datetime(["2024-01-01 10:30", "2024-01-01 12:00"], utc=True))
>>> join_sentiment(candles, sent, columns=["sentiment_score"])["sentiment_score"].tolist()
[nan, 0.5, -0.2]
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from S1.datasets import (
    Dataset,
    dataset_path,
    indicators_command,
    normalize_symbol,
    read_metadata,
    read_parquet,
    sentiment_path,
    write_parquet,
)
from S1.errors import UserError
from S4.evaluate import OUTPUT_COLUMNS, evaluate
from S4.rules import ML_COLUMNS, SENTIMENT_COLUMNS, RuleSet, load_rules

log = logging.getLogger(__name__)

#: ``--sentiment`` scopes: per-asset when present (auto), always market-wide, always per-asset.
SENTIMENT_SCOPES = ("auto", "market", "asset")
#: Quote assets stripped from a symbol to find its base asset (longest match first).
QUOTE_ASSETS = tuple(sorted((
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "USDS", "DAI", "PAX", "UST", "AEUR", "EURI", "USD",
    "EUR", "GBP", "TRY", "BRL", "AUD", "JPY", "RUB", "UAH", "ZAR", "PLN", "RON", "ARS", "IDR", "MXN", "COP",
    "CZK", "NGN", "BIDR", "BVND", "BTC", "ETH", "BNB", "XRP", "TRX"), key=len, reverse=True))


# ------------------------------------------------------------------------- commands
def sentiment_command(interval: str, since: pd.Timestamp | None = None) -> str:
    """The S3 command that writes ``data/sentiment_<interval>.parquet`` from ``since`` (with ``--offline``
    when this run is on the simulated market: its news are the local simulated feed's)."""
    day = (since.strftime("%Y-%m-%d") if since is not None else "2024-01-01")
    from S1.settings import get_settings

    try:
        offline = " --offline" if get_settings().simulated_market else ""
    except Exception:   # the command is only a hint
        offline = ""
    return f"python S3/sentiment.py --since {day} --interval {interval}{offline}"


def model_command(dataset: Dataset) -> str:
    """The S4 command that writes the ``_ml`` file (``ml_proba``)."""
    return f"python S4/model.py {dataset.args}"


# ---------------------------------------------------------------------------- joins
def _utc_index(index: pd.Index, what: str) -> pd.DatetimeIndex:
    if not isinstance(index, pd.DatetimeIndex):
        raise UserError(f"{what}: the index must be UTC timestamps (open_time)", "use frame.set_index('open_time')")
    return index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")


def asof_positions(left: pd.DatetimeIndex, right: pd.DatetimeIndex) -> np.ndarray:
    """For each time in ``left``, the position of the last ``right`` time ``<= it``
    (-1 when there is none). ``right`` must be increasing.

    >>> t = pd.to_datetime(["2024-01-01 10:00", "2024-01-01 11:00"], utc=True)
    >>> asof_positions(t, pd.to_datetime(["2024-01-01 10:00:01"], utc=True)).tolist()
    [-1, 0]
    """
    lv = _utc_index(left, "frame").as_unit("ns").asi8
    rv = _utc_index(right, "sentiment").as_unit("ns").asi8
    return np.searchsorted(rv, lv, side="right") - 1


def check_sentiment(sentiment: pd.DataFrame, *, what: str = "sentiment", columns: Iterable[str] = ()
                    ) -> pd.DataFrame:
    """Validate a sentiment frame (UTC index, increasing, unique, the columns present)."""
    if not isinstance(sentiment, pd.DataFrame):
        raise UserError(f"{what}: expected a DataFrame, got {type(sentiment).__name__}",
                        "read it with S1.datasets.read_parquet(sentiment_path('1h'))")
    idx = _utc_index(sentiment.index, what)
    if not (idx.is_monotonic_increasing and idx.is_unique):
        raise UserError(f"{what}: the index is not strictly increasing",
                        "re-create it with python S3/sentiment.py")
    missing = [c for c in columns if c not in sentiment.columns]
    if missing:
        raise UserError(f"{what}: no column(s) {missing} (has {list(sentiment.columns)})",
                        "re-create it with python S3/sentiment.py")
    if idx is not sentiment.index:
        sentiment = sentiment.set_axis(idx)
    return sentiment


def join_sentiment(frame: pd.DataFrame, sentiment: pd.DataFrame, *, columns: Iterable[str] | None = None,
                   max_age: pd.Timedelta | str | None = None) -> pd.DataFrame:
    """``frame`` plus the sentiment ``columns`` (default: every sentiment column the
    file has), as-of each row's open time (the last sentiment row at or before it).
    Rows before the first sentiment row, or whose last row is older than ``max_age``,
    get NaN."""
    if columns is None:
        columns = [c for c in SENTIMENT_COLUMNS if c in sentiment.columns]
    columns = list(columns)
    sentiment = check_sentiment(sentiment, columns=columns)
    pos = asof_positions(frame.index, sentiment.index)
    ok = pos >= 0
    if max_age is not None:
        age_limit = pd.Timedelta(max_age)
        lv = _utc_index(frame.index, "frame").as_unit("ns").asi8
        rv = sentiment.index.as_unit("ns").asi8
        ok &= (lv - rv[np.clip(pos, 0, None)]) <= age_limit.value
    out = frame.drop(columns=[c for c in columns if c in frame.columns])
    new = {}
    for c in columns:
        vals = sentiment[c].to_numpy(dtype=np.float64, na_value=np.nan)
        col = np.full(len(frame), np.nan)
        col[ok] = vals[pos[ok]]
        new[c] = col
    return pd.concat([out, pd.DataFrame(new, index=frame.index)], axis=1)


def join_ml(frame: pd.DataFrame, ml: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus ``ml_proba`` from the ML file, matched on the exact open time."""
    if "ml_proba" not in ml.columns:
        raise UserError(f"the ML frame has no ml_proba column (has {list(ml.columns)})",
                        "re-create it with python S4/model.py")
    ml_idx = _utc_index(ml.index, "ML file")
    values = pd.Series(ml["ml_proba"].to_numpy(dtype=np.float64), index=ml_idx)
    if not ml_idx.is_unique:
        raise UserError("the ML file has duplicate open times", "re-create it with python S4/model.py")
    joined = values.reindex(_utc_index(frame.index, "frame")).to_numpy()
    out = frame.drop(columns=[c for c in ML_COLUMNS if c in frame.columns])
    return out.assign(ml_proba=joined)


def signals_frame(frame: pd.DataFrame, rules: RuleSet, *, sentiment: pd.DataFrame | None = None,
                  ml: pd.DataFrame | None = None, sentiment_max_age=None) -> pd.DataFrame:
    """``frame`` + the joins the rules need + ``entry exit signal rule`` (pure, no files).

    Sentiment is joined when the rules read a sentiment column that ``frame`` lacks
    (then ``sentiment`` is required); likewise ``ml`` for ``ml_proba``.
    """
    need = rules.required_columns()
    sent_cols = [c for c in need if c in SENTIMENT_COLUMNS and c not in frame.columns]
    if sent_cols:
        if sentiment is None:
            raise UserError(f"the rules read {sent_cols} but no sentiment was given",
                            "pass sentiment=read_parquet(sentiment_path('1h')) (made by python S3/sentiment.py)")
        frame = join_sentiment(frame, sentiment, columns=sent_cols, max_age=sentiment_max_age)
    if "ml_proba" in need and "ml_proba" not in frame.columns:
        if ml is None:
            raise UserError("the rules read ml_proba but no ML frame was given",
                            "pass ml=read_parquet(dataset_path(..., 'ml')) (made by python S4/model.py)")
        frame = join_ml(frame, ml)
    out = evaluate(frame, rules)
    base = frame.drop(columns=[c for c in OUTPUT_COLUMNS if c in frame.columns])
    return pd.concat([base, out], axis=1)


# ------------------------------------------------------------------------------ files
@dataclass
class SignalsResult:
    """What :func:`build_signals` produced."""

    path: Path | None
    frame: pd.DataFrame
    rules: RuleSet
    simulated: bool
    sources: dict[str, str] = field(default_factory=dict)
    coverage: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        f = self.frame
        return {"rows": len(f), "entries": int(f["entry"].sum()), "exits": int(f["exit"].sum())}

    def by_rule(self) -> dict[str, int]:
        vc = self.frame["rule"].value_counts(sort=False)
        return {str(k): int(v) for k, v in vc.items()}


def read_ta_file(dataset: Dataset) -> tuple[pd.DataFrame, Path]:
    path = dataset_path(dataset, "ta")
    if not path.exists():
        raise UserError(f"{path} does not exist",
                        f"create it first with: {indicators_command(dataset)}")
    df = read_parquet(path)
    if not isinstance(df.index, pd.DatetimeIndex) or "close" not in df.columns:
        raise UserError(f"{path} is not an indicator file (no open_time index or close column)",
                        f"re-create it with: {indicators_command(dataset)}")
    return df, path


def base_asset(symbol: str) -> str:
    """The base asset of an exchange symbol: the symbol without its quote asset.

    >>> base_asset("BTCUSDT"), base_asset("eth/btc"), base_asset("SOLFDUSD"), base_asset("PEPE")
    ('BTC', 'ETH', 'SOL', 'PEPE')
    """
    s = normalize_symbol(symbol)
    for q in QUOTE_ASSETS:
        if s.endswith(q) and len(s) > len(q):
            return s[: -len(q)]
    return s


@dataclass(frozen=True)
class SentimentChoice:
    """Which sentiment file a symbol reads and why (recorded in the signals metadata)."""

    path: Path
    used: str                 # "asset" | "market" | "file"
    requested: str            # "auto" | "market" | "asset" | "file"
    asset: str | None = None  # the base asset looked for
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "used": self.used, "asset": self.asset, "file": self.path.name,
                "reason": self.reason}


def _first_existing(interval: str, asset: str | None) -> Path | None:
    for iv in dict.fromkeys((interval, "1h")):
        p = sentiment_path(iv, asset=asset)
        if p.exists():
            return p
    return None


def _last_time(path: Path) -> pd.Timestamp | None:
    idx = read_parquet(path).index
    return idx[-1] if isinstance(idx, pd.DatetimeIndex) and len(idx) else None


def check_sentiment_scope(scope: str) -> str:
    if scope not in SENTIMENT_SCOPES:
        raise UserError(f"unknown sentiment scope {scope!r}",
                        "use auto (per-asset series when present), market or asset -- or a sentiment file path")
    return scope


def choose_sentiment_file(interval: str, since: pd.Timestamp | None, *, symbol: str | None = None,
                          scope: str = "auto") -> SentimentChoice:
    """The sentiment series for ``symbol``'s rules (each ``sentiment_<..>_<interval>``, else
    its ``1h`` file -- an as-of join is exact across intervals):

    - ``"market"``: ``sentiment_<interval>.parquet`` (all news);
    - ``"asset"``: ``sentiment_<base asset>_<interval>.parquet`` (news tagged with the
      base asset, ``python S3/sentiment.py --per-symbol``); missing -> an error naming it;
    - ``"auto"``: the per-asset file when it exists and reaches as far as the market-wide
      one (a per-asset file that stopped being refreshed is not used), else market-wide.

    A missing file names the S3 command that writes it.
    """
    check_sentiment_scope(scope)
    asset = base_asset(symbol) if symbol else None
    if scope == "asset" and asset is None:
        raise UserError("sentiment scope 'asset' needs the symbol", "pass symbol=... (e.g. BTCUSDT)")
    market = _first_existing(interval, None)
    per_asset = _first_existing(interval, asset) if asset else None
    if scope == "asset":
        if per_asset is None:
            raise UserError(f"--sentiment asset: {sentiment_path(interval, asset=asset)} does not exist",
                            f"create it first with: {sentiment_command(interval, since)} --per-symbol {asset} "
                            "(or use --sentiment auto / market)")
        return SentimentChoice(per_asset, "asset", scope, asset, f"news tagged {asset}")
    if scope == "auto" and per_asset is not None:
        if market is not None:
            t_asset, t_market = _last_time(per_asset), _last_time(market)
            if t_market is not None and (t_asset is None or t_asset < t_market):
                reason = (f"{per_asset.name} ends at {t_asset}, before {market.name} ({t_market}): not refreshed, "
                          "so the market-wide series is used")
                log.warning("%s -- re-run python S3/sentiment.py with --per-symbol", reason)
                return SentimentChoice(market, "market", scope, asset, reason)
        return SentimentChoice(per_asset, "asset", scope, asset, f"news tagged {asset}")
    if market is None:
        p = sentiment_path(interval)
        raise UserError(f"the rules read sentiment but {p} does not exist",
                        f"create it first with: {sentiment_command(interval, since)}")
    why = "all news" if scope == "market" or asset is None else f"all news (no per-asset file for {asset})"
    return SentimentChoice(market, "market", scope, asset, why)


def find_sentiment_file(interval: str, since: pd.Timestamp | None, *, symbol: str | None = None,
                        scope: str = "auto") -> Path:
    """``data/sentiment_<interval>.parquet``, else ``data/sentiment_1h.parquet`` (an as-of
    join is exact across intervals); with ``symbol``, the per-asset series of its base
    asset as :func:`choose_sentiment_file` decides; a missing file names the S3 command."""
    return choose_sentiment_file(interval, since, symbol=symbol, scope=scope).path


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True, eq=False)
class RuleInputs:
    """What :func:`load_rule_inputs` read: the ``_ta`` frame with the sentiment / ML
    columns the rules read joined onto it (``frame``), whether any source was made
    by the simulated market, the source file names, the rules (params applied), the
    ``_ta`` path and metadata, and the columns the joins added.

    Unpacks as ``frame, simulated, sources = load_rule_inputs(...)``.
    """

    frame: pd.DataFrame
    simulated: bool
    sources: dict[str, str]
    rules: RuleSet
    ta_path: Path
    ta_metadata: dict[str, Any]
    joined: tuple[str, ...] = ()
    #: :meth:`SentimentChoice.as_dict` when sentiment was joined (which file, asset or market, why).
    sentiment: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        return iter((self.frame, self.simulated, self.sources))

    @property
    def coverage(self) -> dict[str, float]:
        """Share of the bars with a value, for ``sentiment_score`` / ``ml_proba`` when joined."""
        f = self.frame
        return {c: (float(f[c].notna().mean()) if len(f) else 0.0)
                for c in ("sentiment_score", "ml_proba") if c in self.joined}


def load_rule_inputs(dataset: Dataset, rules: RuleSet | Path | str, *,
                     rules_path: Path | str | None = None, params: dict[str, Any] | None = None,
                     sentiment_file: Path | str | None = None, sentiment_max_age=None,
                     sentiment_scope: str = "auto") -> RuleInputs:
    """The inputs a rule file needs, read and joined the one way S4 does it (used by
    :func:`build_signals`, ``S5/optimize.py`` and the walk-forward):

    1. ``dataset_path(symbol, interval, days, "ta")`` (a missing file names the S2 command);
    2. every column the rules read must exist there or be a sentiment / ML column
       (with ``rules_path`` the error names the YAML line; otherwise the S2 command);
       higher-timeframe columns (``rsi14_4h`` ...) it lacks are computed from its candles
       (:func:`S2.informative.ensure_informative`, as ``S2/indicators.py --informative`` does);
    3. ``params`` applied (each checked against its range);
    4. sentiment joined as-of (``sentiment_file``, else :func:`choose_sentiment_file` with
       ``sentiment_scope``: the symbol's per-asset series when present (``auto``), or
       forced ``market`` / ``asset``; ``sentiment_max_age`` as in :func:`join_sentiment`;
       ``sources`` records ``sentiment_scope``) when the rules read a
       sentiment column the ``_ta`` file lacks; ``ml_proba`` from the ``_ml`` file when
       they read it (a missing file names the S3 / S4 command).

    ``rules`` is a loaded :class:`~S4.rules.RuleSet` or a rule file path (then it is
    also the ``rules_path``). ``simulated`` is true when any source file says so.
    """
    if isinstance(rules, (str, Path)):
        rules_path = rules if rules_path is None else rules_path
        rules = load_rules(rules)
    elif not isinstance(rules, RuleSet):
        raise UserError(f"rules must be a RuleSet or a rule file path, got {type(rules).__name__}",
                        "pass load_rules('S4/rules.yaml') or 'S4/rules.yaml'")
    check_sentiment_scope(sentiment_scope)
    ta, ta_path = read_ta_file(dataset)
    from S2.informative import ensure_informative

    ta = ensure_informative(ta, rules.required_columns())  # rsi14_4h ... the _ta file lacks: from its own candles
    allowed = [*ta.columns, *SENTIMENT_COLUMNS, *ML_COLUMNS]
    if rules_path is not None and any(c not in allowed for c in rules.required_columns()):
        load_rules(rules_path, columns=allowed)  # the error names the YAML line and this file's columns
    if params:
        rules = rules.with_params(**params)
    missing = [c for c in rules.required_columns() if c not in allowed]
    if missing:
        raise UserError(f"{ta_path.name} lacks the column(s) {missing} that the rules read",
                        f"re-create it with the lengths you need, e.g. {indicators_command(dataset)} "
                        f"--sma 50,200; it has: {', '.join(map(str, ta.columns))}")
    meta_ta = read_metadata(ta_path)
    simulated = bool(meta_ta.get("simulated", False))
    sources = {"ta": ta_path.name}
    need = rules.required_columns()
    frame = ta
    sent_cols = [c for c in need if c in SENTIMENT_COLUMNS and c not in ta.columns]
    choice = None
    if sent_cols:
        since = ta.index[0] if len(ta) else None
        if sentiment_file is not None:
            sp = Path(sentiment_file)
            if not sp.exists():
                raise UserError(f"sentiment file {sp} does not exist",
                                f"create it with: {sentiment_command(dataset.interval, since)}")
            choice = SentimentChoice(sp, "file", "file", None, "given explicitly")
        else:
            choice = choose_sentiment_file(dataset.interval, since, symbol=dataset.symbol, scope=sentiment_scope)
            sp = choice.path
        frame = join_sentiment(frame, read_parquet(sp), columns=sent_cols, max_age=sentiment_max_age)
        simulated |= bool(read_metadata(sp).get("simulated", False))
        sources["sentiment"] = sp.name
        sources["sentiment_scope"] = choice.used if choice.used != "asset" else f"asset:{choice.asset}"
    ml_cols = [c for c in need if c in ML_COLUMNS and c not in ta.columns]
    if ml_cols:
        mp = dataset_path(dataset, "ml")
        if not mp.exists():
            raise UserError(f"the rules read ml_proba but {mp} does not exist",
                            f"create it first with: {model_command(dataset)}")
        frame = join_ml(frame, read_parquet(mp))
        simulated |= bool(read_metadata(mp).get("simulated", False))
        sources["ml"] = mp.name
    return RuleInputs(frame, simulated, sources, rules, ta_path, meta_ta, (*sent_cols, *ml_cols),
                      choice.as_dict() if choice is not None else {})


def build_signals(dataset: Dataset, rules_path: Path | str | None = None, *,
                  rules: RuleSet | None = None, params: dict[str, Any] | None = None,
                  sentiment_file: Path | str | None = None, sentiment_max_age=None,
                  sentiment_scope: str = "auto", write: bool = True) -> SignalsResult:
    """Read the ``_ta`` file, join sentiment / ML when the rules use them
    (:func:`load_rule_inputs`), evaluate, and write
    ``dataset_path(symbol, interval, days, "signals")`` atomically (the inputs plus
    ``entry exit signal rule``). The source's ``simulated`` flag is carried into the
    output metadata. Give ``rules_path`` or an already loaded ``rules``; ``params``
    overrides param values (validated). ``sentiment_scope``: ``auto`` (the symbol's
    per-asset sentiment series when present), ``market`` or ``asset`` (see
    :func:`choose_sentiment_file`); the choice is in ``metadata["signals"]["sentiment"]``.
    """
    if (rules_path is None) == (rules is None):
        raise UserError("give exactly one of rules_path and rules", "e.g. rules_path='S4/rules.yaml'")
    if rules is None:
        rules = load_rules(rules_path)  # fail fast on the file itself, before reading data
    inputs = load_rule_inputs(dataset, rules, rules_path=rules_path, params=params,
                              sentiment_file=sentiment_file, sentiment_max_age=sentiment_max_age,
                              sentiment_scope=sentiment_scope)
    rules, simulated, sources, coverage = inputs.rules, inputs.simulated, inputs.sources, inputs.coverage
    meta_ta = inputs.ta_metadata
    frame = signals_frame(inputs.frame, rules)
    meta = dict(meta_ta)
    meta["simulated"] = simulated
    meta["signals"] = {
        "rules_file": str(rules_path) if rules_path is not None else None,
        "rules_sha256": _sha256(Path(rules_path)) if rules_path is not None else None,
        "rules_yaml": rules.to_yaml(), "params": rules.params, "sources": sources, "coverage": coverage,
        "sentiment_max_age": str(sentiment_max_age) if sentiment_max_age is not None else None,
        "sentiment": inputs.sentiment or None,
        "entries": int(frame["entry"].sum()), "exits": int(frame["exit"].sum()),
        "semantics": "long only; signal decided on the closed bar t (sentiment as-of the open of t); "
                     "execute at the next bar's open",
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    path = None
    if write:
        path = write_parquet(frame, dataset_path(dataset, "signals", rules=rules_path),
                             metadata=meta)
    return SignalsResult(path, frame, rules, simulated, sources, coverage, meta)


__all__ = [
    "RuleInputs",
    "SENTIMENT_SCOPES",
    "SentimentChoice",
    "base_asset",
    "choose_sentiment_file",
    "SignalsResult",
    "asof_positions",
    "build_signals",
    "check_sentiment",
    "find_sentiment_file",
    "indicators_command",
    "join_ml",
    "join_sentiment",
    "load_rule_inputs",
    "model_command",
    "read_ta_file",
    "sentiment_command",
    "signals_frame",
]
