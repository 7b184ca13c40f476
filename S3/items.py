"""News items: the schema of ``data/news_items.parquet``, normalisation,
de-duplication and the idempotent, atomic append.

One row per story::

    item_id       str   16 hex chars, stable for the same story (source key or title+day)
    published_at  datetime64[ns, UTC]  when the story became public (never after we saw it)
    source        str   "rss:www.coindesk.com", "cryptopanic:CoinDesk", "x", "file:headlines.csv"
    title, summary, url, guid  str ("" when absent)
    symbols       str   comma-separated tickers found in the text, e.g. "BTC,ETH"
    fetched_at    datetime64[ns, UTC]  when this program first saw it
    assets        str   the assets the item is about (S3.assets dictionary), e.g. "BTC,ETH"

``assets`` was added later: files written before it are read with the column
computed from title + summary by the shipped dictionary (:func:`read_items`), and
gain it on their next append (the other columns of existing rows are unchanged).

Two items are the same story when they share a GUID/URL (canonical form: no
tracking parameters, no fragment, lower-case host) or when their normalised
titles (case, accents, punctuation and spacing removed) match within
``items.title_dedup_window_hours``. Rows already in the file are never changed:
appending the same items twice leaves the file byte-for-byte equal in content.

>>> normalise_title("  Bitcoin  hits $100K!!  ")
'bitcoin hits 100k'
>>> canonical_url("HTTPS://www.CoinDesk.com/a/b/?utm_source=x&id=3#top")
'https://www.coindesk.com/a/b?id=3'
>>> find_symbols("Ether ETF approved; $SOL rallies", {"ETH": ("ether", "ethereum")})
'ETH,SOL'
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import pandas as pd

from S1.datasets import news_items_path, read_parquet, write_parquet
from S1.errors import UserError
from S1.storage import as_path
from S3.assets import AssetTagger, default_tagger

log = logging.getLogger(__name__)

TEXT_COLUMNS = ("item_id", "source", "title", "summary", "url", "guid", "symbols", "assets")
ITEM_COLUMNS = ("item_id", "published_at", "source", "title", "summary", "url", "symbols", "guid", "fetched_at",
                "assets")
#: Columns added after the first release: an older file without them is still read.
OPTIONAL_COLUMNS = ("assets",)

_TRACKING = re.compile(r"^(utm_|mtm_|fbclid$|gclid$|ref$|ref_src$|cmpid$)", re.I)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
#: C1 control characters that are really Windows-1252 punctuation decoded as Latin-1
#: (a common mojibake in scraped headlines: "founder\x92s" -> "founder’s").
_C1_AS_CP1252 = {cp: bytes([cp]).decode("cp1252", errors="ignore") or " " for cp in range(0x80, 0xA0)}
_CASHTAG = re.compile(r"\$([A-Za-z][A-Za-z0-9]{1,9})\b")


# ------------------------------------------------------------------ normalisation
def clean_text(text) -> str:
    """Plain one-line text: HTML tags and entities removed, cp1252 mojibake repaired,
    control characters dropped, spacing collapsed.

    >>> clean_text("Uniswap founder\x92s <b>bank</b>&amp;co  ")
    'Uniswap founder’s bank &co'
    """
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    s = html.unescape(_TAG.sub(" ", str(text)))
    s = s.translate(_C1_AS_CP1252)
    s = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in s)
    return _SPACE.sub(" ", s).strip()


def normalise_title(title: str) -> str:
    """The de-duplication key of a title (case, accents, punctuation, spacing ignored)."""
    s = unicodedata.normalize("NFKD", clean_text(title)).casefold()
    s = "".join(ch for ch in s if not unicodedata.combining(ch))
    s = re.sub(r"[^\w\s]", "", s)
    return _SPACE.sub(" ", s).strip()


def canonical_url(url: str) -> str:
    """URL without tracking parameters, fragment and trailing slash; lower-case scheme and host."""
    url = clean_text(url)
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _TRACKING.match(k)])
    path = parts.path.rstrip("/") or ""
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, query, ""))


def find_symbols(text: str, aliases: Mapping[str, Iterable[str]]) -> str:
    """Comma-separated sorted tickers named in ``text`` (aliases as whole words, or cashtags)."""
    found = {m.group(1).upper() for m in _CASHTAG.finditer(text or "")}
    low = (text or "").casefold()
    for symbol, names in aliases.items():
        for name in names:
            if re.search(rf"(?<![\w$]){re.escape(name.casefold())}(?!\w)", low):
                found.add(symbol.upper())
                break
    return ",".join(sorted(found))


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


# ------------------------------------------------------------------------ frames
def empty_items() -> pd.DataFrame:
    return _typed(pd.DataFrame({c: [] for c in ITEM_COLUMNS}))


def _typed(df: pd.DataFrame, tagger: AssetTagger | None = None) -> pd.DataFrame:
    if "assets" not in df.columns:  # a frame or file from before the column existed
        df = df.assign(assets=(tagger or default_tagger()).tag_items(df) if len(df) else "")
    out = df.loc[:, list(ITEM_COLUMNS)].copy()
    for c in TEXT_COLUMNS:
        out[c] = out[c].fillna("").astype(str)
    for c in ("published_at", "fetched_at"):
        # stored at ms resolution (S1.datasets.write_parquet): floor now so that
        # a re-read frame equals the written one
        out[c] = pd.to_datetime(out[c], utc=True).dt.as_unit("ns").dt.floor("ms")
    return out.reset_index(drop=True)


def make_items(records: Iterable[Mapping], *, source: str, fetched_at: pd.Timestamp,
               aliases: Mapping[str, Iterable[str]] | None = None,
               max_future_skew_seconds: float = 300.0, tagger: AssetTagger | None = None) -> pd.DataFrame:
    """Build a typed items frame from dicts with ``title`` and ``published_at`` (and
    optionally ``summary``, ``url``, ``guid``, ``symbols``, ``source``).

    ``assets`` are tagged from title + summary by ``tagger`` (default: the shipped
    dictionary), plus the codes a source attached (``symbols``) that it knows.

    Rows without a title are dropped; a missing ``published_at`` becomes the fetch
    time (the first moment we knew the story); a published_at in the future of the
    fetch time is clamped to it (a feed's clock never gives us look-ahead).
    """
    fetched_at = pd.Timestamp(fetched_at)
    fetched_at = fetched_at.tz_localize("UTC") if fetched_at.tzinfo is None else fetched_at.tz_convert("UTC")
    tagger = tagger if tagger is not None else default_tagger()
    rows, clamped, undated = [], 0, 0
    for r in records:
        title = clean_text(r.get("title"))
        if not title:
            continue
        summary = clean_text(r.get("summary"))
        url = canonical_url(r.get("url") or "")
        guid = clean_text(r.get("guid"))
        pub = r.get("published_at")
        try:
            pub = pd.Timestamp(pub) if pub is not None and pub == pub and pub != "" else None
        except (ValueError, TypeError):
            pub = None
        if pub is None or pub is pd.NaT:
            pub, undated = fetched_at, undated + 1
        pub = pub.tz_localize("UTC") if pub.tzinfo is None else pub.tz_convert("UTC")
        if pub > fetched_at + pd.Timedelta(seconds=max_future_skew_seconds):
            pub, clamped = fetched_at, clamped + 1
        symbols = r.get("symbols") or ""
        if not isinstance(symbols, str):
            symbols = ",".join(str(s) for s in symbols)
        assets = ",".join(tagger.tag(f"{title} {summary}", provided=symbols.split(",")))
        found = find_symbols(f"{title} {summary}", aliases or {})
        symbols = ",".join(sorted({s.strip().upper() for s in f"{symbols},{found}".split(",") if s.strip()}))
        src = clean_text(r.get("source")) or source
        key = guid or url
        item_id = _hash(src, key) if key else _hash(normalise_title(title), pub.strftime("%Y-%m-%d"))
        rows.append({"item_id": item_id, "published_at": pub, "source": src, "title": title,
                     "summary": summary, "url": url, "symbols": symbols, "guid": guid,
                     "fetched_at": fetched_at, "assets": assets})
    if clamped:
        log.warning("%s: %d item(s) dated after the fetch time were clamped to it", source, clamped)
    if undated:
        log.info("%s: %d item(s) without a date were stamped with the fetch time", source, undated)
    if not rows:
        return empty_items()
    return _typed(pd.DataFrame(rows))


def dedupe(new: pd.DataFrame, existing: pd.DataFrame | None = None, *, title_window_hours: float = 72.0
           ) -> pd.DataFrame:
    """Rows of ``new`` that are not the same story as an earlier row of ``new`` or any
    row of ``existing`` (same item_id, GUID, canonical URL, or normalised title within
    ``title_window_hours``). Within ``new`` the earliest-published copy is kept."""
    existing = empty_items() if existing is None else existing
    new = new.sort_values(["published_at", "item_id"], kind="stable").reset_index(drop=True)
    seen_ids = set(existing["item_id"])
    seen_keys = {k for k in existing["guid"] if k} | {k for k in existing["url"] if k}
    titles: dict[str, list[int]] = {}
    for t, p in zip(existing["title"], existing["published_at"].astype("int64")):
        titles.setdefault(normalise_title(t), []).append(int(p))
    window = int(title_window_hours * 3600 * 1e9)
    keep = np.zeros(len(new), dtype=bool)
    for i, row in enumerate(new.itertuples(index=False)):
        keys = {k for k in (row.guid, row.url) if k}
        tkey = normalise_title(row.title)
        pub = int(pd.Timestamp(row.published_at).value)
        if row.item_id in seen_ids or keys & seen_keys:
            continue
        if tkey and any(abs(pub - p) <= window for p in titles.get(tkey, ())):
            continue
        keep[i] = True
        seen_ids.add(row.item_id)
        seen_keys |= keys
        titles.setdefault(tkey, []).append(pub)
    return new.loc[keep].reset_index(drop=True)


#: How the offline mode's simulated feed marks its items (:mod:`S3.local.simulated_news`).
SIMULATED_GUID_PREFIX = "sim-"
SIMULATED_URL_PART = "/simulated/"


def simulated_mask(items: pd.DataFrame) -> pd.Series:
    """True for the items that came from the simulated feed of the offline mode.

    The label travels with the item (its GUID and link), not with the run's
    settings, so a later ``--no-fetch`` run still knows the series it builds from
    them is simulated.

    >>> df = pd.DataFrame({"guid": ["sim-BTC-20240101-0", "abc"], "url": ["", "https://x.com/a"]})
    >>> simulated_mask(df).tolist()
    [True, False]
    """
    if items is None or not len(items):
        return pd.Series([], dtype=bool)
    guid = items["guid"].astype(str) if "guid" in items else pd.Series("", index=items.index)
    url = items["url"].astype(str) if "url" in items else pd.Series("", index=items.index)
    return guid.str.startswith(SIMULATED_GUID_PREFIX) | url.str.contains(SIMULATED_URL_PART, regex=False)


def read_items(path: Path | None = None, *, tagger: AssetTagger | None = None) -> pd.DataFrame:
    """The stored items (an empty frame when the file does not exist yet). A file
    written before the ``assets`` column existed gets it computed from title +
    summary with ``tagger`` (default: the shipped dictionary)."""
    path = as_path(path) if path is not None else news_items_path()
    if not path.exists():
        return empty_items()
    df = read_parquet(path)
    missing = [c for c in ITEM_COLUMNS if c not in df.columns and c not in OPTIONAL_COLUMNS]
    if missing:
        raise UserError(f"{path} lacks columns {missing}",
                        "it was not written by S3/news.py; move it away and re-run the ingestion")
    return _typed(df, tagger)


def append_items(new: pd.DataFrame, path: Path | None = None, *, title_window_hours: float = 72.0,
                 tagger: AssetTagger | None = None) -> tuple[pd.DataFrame, int]:
    """Append the new stories of ``new`` to the items file (atomic write; existing rows
    are kept as they are, an old file gains the ``assets`` column). Returns (all
    items, number added)."""
    path = as_path(path) if path is not None else news_items_path()
    existing = read_items(path, tagger=tagger)
    fresh = dedupe(_typed(new, tagger), existing, title_window_hours=title_window_hours)
    if fresh.empty and path.exists():
        return existing, 0
    allrows = pd.concat([existing, fresh], ignore_index=True) if len(existing) else fresh
    allrows = allrows.sort_values(["published_at", "item_id"], kind="stable").reset_index(drop=True)
    write_parquet(allrows, path, metadata={"kind": "news_items", "rows": len(allrows)})
    return allrows, len(fresh)


# ------------------------------------------------------------------ file import
_DATE_COLS = ("published_at", "date", "datetime", "timestamp", "time", "created_at", "published")
_TITLE_COLS = ("title", "headline", "text", "tweet")


def read_headlines(path: Path, *, need_date: bool = True, date_only: str = "end_of_day") -> pd.DataFrame:
    """Read a CSV or Parquet of headlines into ``title`` (+ ``published_at`` UTC, and
    ``summary``/``url``/``source``/``symbols``/``label`` when present).

    The title column may be called title, headline, text or tweet; the date column
    published_at, date, datetime, timestamp, time, created_at or published. Naive
    times are UTC. **Date-only values** (``2022-01-25``) are stamped at the end of
    that day by default (``date_only="end_of_day"``): the headline may have come out
    at 23:59, so it may inform only candles from the next day on.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist", "pass an existing CSV or Parquet file of headlines")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = read_parquet(path)
            if isinstance(df.index, pd.DatetimeIndex) and not any(c in df.columns for c in _DATE_COLS):
                df = df.reset_index().rename(columns={df.index.name or "index": "published_at"})
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read {path}: {exc}", "pass a UTF-8 CSV with a header row, or a Parquet file") from exc
    cols = {c.lower().strip(): c for c in df.columns}
    tcol = next((cols[c] for c in _TITLE_COLS if c in cols), None)
    if tcol is None:
        raise UserError(f"{path} has no headline column (columns: {list(df.columns)})",
                        "name the text column 'headline' or 'title'")
    out = pd.DataFrame({"title": df[tcol].map(clean_text)}, index=df.index)
    dcol = next((cols[c] for c in _DATE_COLS if c in cols), None)
    if dcol is not None:
        out["published_at"] = parse_times(df[dcol], date_only=date_only, what=f"{path}:{dcol}")
    elif need_date:
        raise UserError(f"{path} has no date column (columns: {list(df.columns)})",
                        "add a 'date' or 'published_at' column (UTC; date-only values are read as end of day)")
    for name in ("summary", "url", "source", "symbols", "guid"):
        if name in cols:
            out[name] = df[cols[name]].astype(str)
    if "label" in cols:
        out["label"] = df[cols["label"]]
    if "id" in cols:
        out["id"] = df[cols["id"]]
    return out.reset_index(drop=True)


def parse_times(values: pd.Series, *, date_only: str = "end_of_day", what: str = "date") -> pd.Series:
    """Parse timestamps to UTC (naive = UTC; epoch numbers in s or ms; date-only per ``date_only``)."""
    s = values
    if pd.api.types.is_datetime64_any_dtype(s):
        ts = pd.to_datetime(s, utc=True)
    else:
        s = s.astype(str).str.strip()
        numeric = pd.to_numeric(s, errors="coerce")
        if numeric.notna().all() and len(s):
            unit = "ms" if numeric.abs().max() > 1e11 else "s"
            ts = pd.to_datetime(numeric, unit=unit, utc=True)
        else:
            ts = pd.to_datetime(s, utc=True, errors="coerce", format="mixed")
            dateonly = s.str.fullmatch(r"\d{4}-\d{2}-\d{2}")
            if date_only == "end_of_day":
                ts = ts.where(~dateonly, ts + pd.Timedelta(days=1) - pd.Timedelta(milliseconds=1))
    bad = ts.isna()
    if bad.any():
        first = values[bad].iloc[0]
        raise UserError(f"{what}: {int(bad.sum())} value(s) are not dates, e.g. {str(first)[:40]!r}",
                        "use ISO dates such as 2024-01-31 or 2024-01-31T10:37:00Z")
    return ts.dt.as_unit("ns")
