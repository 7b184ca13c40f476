"""The market panels of the S7 dashboard (no Streamlit): S2 indicator frames and S3
sentiment series, read from the data directory.

- :func:`indicator_sources` / :func:`load_indicators`: one entry per market and window
  that has a ``_ta`` file (else its candle file, indicators computed in memory).
- :func:`read_sentiment` / :func:`sentiment_summary`: an S3 sentiment file and its
  figures (the files themselves: :func:`S7.dashboard_files.sentiment_files`).

>>> import tempfile
>>> indicator_sources(data_dir=Path(tempfile.mkdtemp()))
[]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np  # noqa: F401  (the doctests' namespace)
import pandas as pd

from S1.datasets import read_metadata, read_parquet
from S1.errors import UserError
from S7.dashboard_files import SIMULATED_LABEL, simulated_flag


# ----------------------------------------------------------------- indicators
@dataclass(frozen=True)
class IndicatorSource:
    """A dataset the indicator panel can draw: the ``_ta`` file, else the candle file."""

    symbol: str
    interval: str
    days: int
    exchange: str | None
    kind: str          #: "ta" or "candles" (indicators computed in memory)
    path: Path
    simulated: bool | None

    @property
    def label(self) -> str:
        ex = f"{self.exchange}:" if self.exchange else ""
        what = "indicators" if self.kind == "ta" else "candles (indicators computed here)"
        return f"{ex}{self.symbol} {self.interval} {self.days}d · {what}" + (
            f" · {SIMULATED_LABEL}" if self.simulated else "")


def indicator_sources(*, data_dir: Path | None = None) -> list[IndicatorSource]:
    """One entry per market and window that has a ``_ta`` or a candle file (the files
    listed by :func:`S2.ta_io.list_datasets`), sorted by symbol, interval, days."""
    from S2.ta_io import list_datasets

    groups: dict[tuple, dict[str, Path]] = {}
    for row in list_datasets(("ta", "candles"), directory=data_dir).itertuples():
        groups.setdefault((row.symbol, row.interval, row.days, row.exchange), {})[row.kind] = row.path
    out = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3] or "")):
        kind = "ta" if "ta" in groups[key] else "candles"
        path = groups[key][kind]
        out.append(IndicatorSource(*key, kind=kind, path=path, simulated=simulated_flag(path)))
    return out


def load_indicators(source: IndicatorSource) -> pd.DataFrame:
    """The whole indicator frame of ``source`` (computed with S2's ``add_indicators``
    when only the candle file exists)."""
    from S2.ta import add_indicators
    from S2.ta_io import read_candles, read_ta

    if source.kind == "ta":
        return read_ta(source.path)
    return add_indicators(read_candles(source.path), what=source.path.name)


# ------------------------------------------------------------------ sentiment
def read_sentiment(path: Path) -> tuple[pd.DataFrame, dict]:
    """The sentiment frame (UTC ``open_time`` index, ``sentiment_score``, ``n_items`` ...) and its metadata."""
    df = read_parquet(path)
    if not isinstance(df.index, pd.DatetimeIndex) or "sentiment_score" not in df.columns:
        raise UserError(f"{path} is not a sentiment file (no open_time index or sentiment_score column)",
                        "re-create it with python S3/sentiment.py")
    return df.sort_index(), read_metadata(path)


def sentiment_summary(frame: pd.DataFrame, meta: dict | None = None) -> dict[str, Any]:
    """Latest score, means and item counts over the last 24 h and 7 days (before the
    last open time), plus the metadata's classifier / half-life / simulated flag.

    >>> t = pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC", name="open_time")
    >>> f = pd.DataFrame({"sentiment_score": np.r_[np.zeros(24), np.full(24, 0.5)], "n_items": 1}, index=t)
    >>> s = sentiment_summary(f, {"classifier": "lexicon", "simulated": True})
    >>> s["latest"], s["mean_24h"], s["items_24h"], s["mean_7d"], s["simulated"]
    (0.5, 0.5, 24, 0.25, True)
    """
    meta = meta or {}
    out: dict[str, Any] = {"rows": len(frame), "first": None, "last": None, "latest": None, "mean_24h": None,
                           "mean_7d": None, "items_24h": None, "items_7d": None, "items_total": None,
                           "classifier": meta.get("classifier"), "half_life": meta.get("half_life"),
                           "simulated": meta.get("simulated")}
    if not len(frame):
        return out
    s = frame["sentiment_score"].astype(float)
    last = frame.index[-1]
    out.update(first=frame.index[0], last=last, latest=float(s.iloc[-1]))
    for tag, span in (("24h", pd.Timedelta(hours=24)), ("7d", pd.Timedelta(days=7))):
        sel = frame.index > last - span
        out[f"mean_{tag}"] = float(s[sel].mean())
        if "n_items" in frame.columns:
            out[f"items_{tag}"] = int(frame.loc[sel, "n_items"].sum())
    if "n_items" in frame.columns:
        out["items_total"] = int(frame["n_items"].sum())
    return out


__all__ = ["IndicatorSource", "indicator_sources", "load_indicators", "read_sentiment", "sentiment_summary"]
