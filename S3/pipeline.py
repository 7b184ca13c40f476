"""End-to-end S3 job used by ``S3/sentiment.py`` (and notebooks): fetch news,
classify the stored items, aggregate them into ``data/sentiment_<interval>.parquet``.

Offline, from a file of dated headlines, with the lexicon classifier::

    from S3.pipeline import build_sentiment
    series, run = build_sentiment(since="2022-01-01", until="2022-02-01", interval="1h",
                                  sources=["file:headlines.csv"], classifier="lexicon")
    series["sentiment_score"].plot()

Per-asset series (``per_symbol=True`` or a list of assets; ``--per-symbol`` of the
script): the same computation restricted to the items tagged with each asset
(column ``assets``, see :mod:`S3.assets`), written beside the market-wide file as
``sentiment_<asset>_<interval>.parquet`` (:func:`S1.datasets.sentiment_path` with
``asset=``). Items are classified once; an item about BTC and ETH counts in both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from S1.datasets import news_items_path, sentiment_asset_paths, sentiment_path, write_parquet
from S1.errors import UserError
from S1.intervals import check_interval
from S1.settings import Settings, get_settings
from S1.storage import as_path
from S3.assets import AssetTagger, has_asset, tag_counts
from S3.classifiers import classify_frame, get_classifier, resolve_spec
from S3.config import S3Config, load_config
from S3.items import read_items, simulated_mask
from S3.series import sentiment_series
from S3.sources import IngestReport, default_specs, ingest

log = logging.getLogger(__name__)

#: Items older than this many half-lives before --since weigh < 2**-20: skipped.
WARMUP_HALF_LIVES = 20


@dataclass
class SentimentRun:
    path: Path | None = None
    classifier: str = ""
    items_used: int = 0
    unknown: int = 0
    ingest: IngestReport | None = None
    llm_summary: str | None = None
    label_counts: dict = field(default_factory=dict)
    #: Per-asset series written: asset -> path, and the number of items tagged with it.
    asset_paths: dict = field(default_factory=dict)
    asset_items: dict = field(default_factory=dict)
    #: Per-asset files of this interval left as they were (older than the market-wide one now).
    stale_asset_files: list = field(default_factory=list)
    #: Items of the window that came from the offline mode's simulated feed: when
    #: any is used the series is labelled simulated, whatever the settings of this run.
    simulated_items: int = 0


def _utc(ts) -> pd.Timestamp:
    try:
        t = pd.Timestamp(ts)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{ts!r} is not a date", "use e.g. 2024-01-01 or 2024-01-01T10:00Z") from exc
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def build_sentiment(*, since, until=None, interval: str = "1h", sources: list[str] | None = None,
                    fetch: bool = True, classifier: str = "auto", config: S3Config | None = None,
                    settings: Settings | None = None, items_path: Path | None = None,
                    out_path: Path | None = None, write: bool = True, progress: bool = True,
                    per_symbol: bool | list[str] | tuple[str, ...] = False, retag: bool = False
                    ) -> tuple[pd.DataFrame, SentimentRun]:
    """Fetch (unless ``fetch=False``), classify and aggregate; write the series atomically.

    ``per_symbol``: also write one series per asset -- ``True`` for every asset of
    the dictionary tagged on at least one item of the window, or a list such as
    ``["BTC", "ETH"]``. ``retag``: re-tag the stored items with the current
    dictionary first (after editing ``assets.extra_file``); otherwise the stored
    ``assets`` column is used."""
    check_interval(interval)
    config = config or load_config()
    settings = settings or get_settings()
    since_ts = _utc(since)
    until_ts = _utc(until) if until is not None else pd.Timestamp.now(tz="UTC")
    if until_ts < since_ts:
        raise UserError(f"--until {until_ts} is before --since {since_ts}", "pass a later --until")
    run = SentimentRun()
    items_path = as_path(items_path) if items_path is not None else news_items_path()
    tagger = config.assets.tagger()
    wanted = _wanted_assets(per_symbol, tagger)  # bad input fails before any network
    if fetch:
        specs = sources if sources is not None else default_specs(settings)
        _, run.ingest = ingest(specs, path=items_path, config=config, settings=settings)
    items = read_items(items_path, tagger=tagger)
    if items.empty:
        raise UserError(f"no news items in {items_path}",
                        "fetch some with python S3/news.py, or pass --sources file:HEADLINES.csv")
    hl = pd.Timedelta(config.series.half_life)
    lo = since_ts - WARMUP_HALF_LIVES * hl
    window = items[(items["published_at"] >= lo) & (items["published_at"] < until_ts)]
    if retag and len(window):
        window = window.assign(assets=tagger.tag_items(window))
    if window.empty:
        log.warning("no stored item was published between %s and %s: the score is 0 throughout",
                    lo, until_ts)
    run.classifier = resolve_spec(classifier, settings=settings)
    clf = get_classifier(run.classifier, settings=settings, config=config, progress=progress)
    scored = classify_frame(window.reset_index(drop=True), clf) if len(window) else \
        window.assign(label=pd.Series(dtype=str), score=pd.Series(dtype=float), confidence=pd.Series(dtype=float))
    if getattr(clf, "usage", None) is not None and len(window):
        run.llm_summary = clf.usage.summary()
    run.items_used = len(scored)
    run.simulated_items = int(simulated_mask(scored).sum()) if len(scored) else 0
    run.unknown = int((scored["label"] == "unknown").sum())
    run.label_counts = scored["label"].value_counts().to_dict()
    kw = dict(since=since_ts, until=until_ts, interval=interval, half_life=config.series.half_life,
              prior_weight=config.series.prior_weight)
    series = sentiment_series(scored, **kw)
    per_asset: dict[str, pd.DataFrame] = {}
    if wanted is not None:
        counts = tag_counts(scored["assets"]) if len(scored) else {}
        assets = [a for a in counts if a in tagger.table] if wanted == "all" else list(wanted)
        for a in assets:
            sub = scored[has_asset(scored["assets"], a)]
            run.asset_items[a] = len(sub)
            if sub.empty:
                log.warning("no item of the window is tagged %s: its series is 0 throughout", a)
            per_asset[a] = sentiment_series(sub, **kw)
    if write:
        run.path = as_path(out_path) if out_path is not None else sentiment_path(interval)
        meta = {"kind": "sentiment", "scope": "market", "interval": interval, "classifier": run.classifier,
                "half_life": config.series.half_life, "prior_weight": config.series.prior_weight,
                "since": since_ts.isoformat(), "until": until_ts.isoformat(), "items_used": run.items_used,
                "unknown": run.unknown, "rule": "value at open time t uses only items with published_at < t",
                "generated_at": pd.Timestamp.now(tz="UTC").isoformat(),
                "simulated": bool(settings.simulated_market or run.simulated_items),
                "simulated_items": run.simulated_items}
        write_parquet(series, run.path, metadata=meta)
        for a, s_a in per_asset.items():
            p = sentiment_path(interval, asset=a, data_dir=run.path.parent)
            write_parquet(s_a, p, metadata={**meta, "scope": "asset", "asset": a, "items_used": run.asset_items[a],
                                            "assets_tagger": tagger.fingerprint, "retagged": bool(retag),
                                            "unknown": int((scored.loc[has_asset(scored["assets"], a), "label"]
                                                            == "unknown").sum()) if len(scored) else 0})
            run.asset_paths[a] = p
        run.stale_asset_files = [p for p in asset_files(interval, data_dir=run.path.parent)
                                 if p not in run.asset_paths.values()]
        if run.stale_asset_files:
            log.warning("%d per-asset sentiment file(s) were not updated (%s); S4 --sentiment auto falls back to "
                        "the market-wide series where they end earlier -- re-run with --per-symbol to refresh them",
                        len(run.stale_asset_files), ", ".join(p.name for p in run.stale_asset_files[:5]))
    return series, run


def _wanted_assets(per_symbol, tagger: AssetTagger):
    """``None`` (no per-asset series), ``"all"`` or a checked list of asset codes."""
    if per_symbol is None or per_symbol is False:
        return None
    if per_symbol is True or (isinstance(per_symbol, str) and per_symbol.strip().lower() in ("all", "")):
        return "all"
    names = per_symbol.split(",") if isinstance(per_symbol, str) else list(per_symbol)
    out = list(dict.fromkeys(str(a).strip().upper() for a in names if str(a).strip()))
    unknown = [a for a in out if a not in tagger.table]
    if unknown or not out:
        raise UserError(f"--per-symbol: unknown asset(s) {unknown or per_symbol!r}",
                        f"use codes of S3/assets.yaml ({', '.join(list(tagger.table)[:12])} ...) or add them "
                        "in assets.extra_file")
    return out


def asset_files(interval: str, *, data_dir: Path | None = None) -> list[Path]:
    """The per-asset sentiment files of ``interval`` present in the data directory."""
    return list(sentiment_asset_paths(interval, data_dir=data_dir).values())
