"""End-to-end S3 job used by ``S3/sentiment.py`` (and notebooks): fetch news,
classify the stored items, aggregate them into ``data/sentiment_<interval>.parquet``.

Offline, from a file of dated headlines, with the lexicon classifier::

    from S3.pipeline import build_sentiment
    series, run = build_sentiment(since="2022-01-01", until="2022-02-01", interval="1h",
                                  sources=["file:headlines.csv"], classifier="lexicon")
    series["sentiment_score"].plot()
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from S1.cli import UserError
from S1.datasets import news_items_path, sentiment_path, write_parquet
from S1.settings import get_settings
from S1.intervals import check_interval
from S1.settings import Settings
from S3.classifiers import classify_frame, get_classifier, resolve_spec
from S3.config import S3Config, load_config
from S3.items import read_items
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


def _utc(ts) -> pd.Timestamp:
    try:
        t = pd.Timestamp(ts)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{ts!r} is not a date", "use e.g. 2024-01-01 or 2024-01-01T10:00Z") from exc
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def build_sentiment(*, since, until=None, interval: str = "1h", sources: list[str] | None = None,
                    fetch: bool = True, classifier: str = "auto", config: S3Config | None = None,
                    settings: Settings | None = None, items_path: Path | None = None,
                    out_path: Path | None = None, write: bool = True, progress: bool = True
                    ) -> tuple[pd.DataFrame, SentimentRun]:
    """Fetch (unless ``fetch=False``), classify and aggregate; write the series atomically."""
    check_interval(interval)
    config = config or load_config()
    settings = settings or get_settings()
    since_ts = _utc(since)
    until_ts = _utc(until) if until is not None else pd.Timestamp.now(tz="UTC")
    if until_ts < since_ts:
        raise UserError(f"--until {until_ts} is before --since {since_ts}", "pass a later --until")
    run = SentimentRun()
    items_path = Path(items_path) if items_path is not None else news_items_path()
    if fetch:
        specs = sources if sources is not None else default_specs(settings)
        _, run.ingest = ingest(specs, path=items_path, config=config, settings=settings)
    items = read_items(items_path)
    if items.empty:
        raise UserError(f"no news items in {items_path}",
                        "fetch some with python S3/news.py, or pass --sources file:HEADLINES.csv")
    hl = pd.Timedelta(config.series.half_life)
    lo = since_ts - WARMUP_HALF_LIVES * hl
    window = items[(items["published_at"] >= lo) & (items["published_at"] < until_ts)]
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
    run.unknown = int((scored["label"] == "unknown").sum())
    run.label_counts = scored["label"].value_counts().to_dict()
    series = sentiment_series(scored, since=since_ts, until=until_ts, interval=interval,
                              half_life=config.series.half_life, prior_weight=config.series.prior_weight)
    if write:
        run.path = Path(out_path) if out_path is not None else sentiment_path(interval)
        meta = {"kind": "sentiment", "interval": interval, "classifier": run.classifier,
                "half_life": config.series.half_life, "prior_weight": config.series.prior_weight,
                "since": since_ts.isoformat(), "until": until_ts.isoformat(), "items_used": run.items_used,
                "unknown": run.unknown, "rule": "value at open time t uses only items with published_at < t",
                "generated_at": pd.Timestamp.now(tz="UTC").isoformat(),
                "simulated": bool(get_settings().simulated_market)}
        write_parquet(series, run.path, metadata=meta)
    return series, run
