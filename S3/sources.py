"""News sources: RSS/Atom feeds, the CryptoPanic API, X API v2 recent search and
CSV/Parquet files of dated headlines. Each returns an items frame
(:mod:`S3.items` schema); :func:`ingest` runs the chosen ones, logs and skips
any that fails (network, HTTP status, malformed feed) and appends the new
stories to ``data/news_items.parquet``.

Source specs (``--sources``): ``rss``, ``cryptopanic``, ``x``, ``file:PATH``.
Base URLs come from :mod:`S1.settings` (``CRYPTOPANIC_URL``, ``X_API_URL``,
``NEWS_FEEDS``) so tests and mirrors can point them at local servers.

>>> parse_source_specs("rss, file:old.csv")
['rss', 'file:old.csv']
"""

from __future__ import annotations

import calendar
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import pandas as pd
import requests

from S1.errors import UserError
from S1.settings import Settings, get_settings
from S3.config import S3Config, load_config
from S3.fetch import FetchError, http_get
from S3.items import append_items, empty_items, make_items, read_headlines

log = logging.getLogger(__name__)

KNOWN = ("rss", "cryptopanic", "x")
_EMPTY_ELEMENTS = re.compile(rb"<(dc:description|content:encoded|description|summary)\s*/>")


def parse_source_specs(text: str | None) -> list[str]:
    """Validate a comma-separated source list (``file:`` paths may not contain commas)."""
    if not text:
        return []
    specs = [s.strip() for s in str(text).split(",") if s.strip()]
    for s in specs:
        if s not in KNOWN and not s.startswith("file:"):
            raise UserError(f"unknown news source {s!r}", "use rss, cryptopanic, x or file:PATH (comma-separated)")
        if s.startswith("file:") and not s[5:]:
            raise UserError("file: needs a path", "write e.g. --sources file:data/headlines.csv")
    return specs


def default_specs(settings: Settings | None = None) -> list[str]:
    """RSS always; CryptoPanic and X when their tokens are configured."""
    s = settings or get_settings()
    specs = ["rss"]
    if s.cryptopanic_token is not None:
        specs.append("cryptopanic")
    if s.x_bearer_token is not None:
        specs.append("x")
    return specs


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


# ----------------------------------------------------------------------------- RSS
def feed_urls(config: S3Config, settings: Settings) -> list[str]:
    urls = list(config.sources.rss.feeds) or [u.strip() for u in settings.news_feeds.split(",") if u.strip()]
    return urls


def parse_feed(body: bytes, *, url: str, config: S3Config, fetched_at: pd.Timestamp) -> pd.DataFrame:
    """Items of one RSS/Atom document. Raises :class:`ValueError` when it is not a feed."""
    # Real feeds (CoinDesk's among them) carry empty <dc:description/> and
    # <content:encoded/> after the real <description>; feedparser lets the empty
    # one win, which would lose every summary. Drop the empty elements first.
    body = _EMPTY_ELEMENTS.sub(b"", body)
    parsed = feedparser.parse(body)
    if not parsed.entries:
        reason = getattr(parsed, "bozo_exception", None) if parsed.bozo else "no entries"
        if parsed.bozo or not parsed.version:
            raise ValueError(f"not a valid RSS/Atom feed ({str(reason)[:120]})")
        return empty_items()
    if parsed.bozo:
        log.warning("%s: feed is not well-formed (%s); keeping the %d entries parsed",
                    url, str(getattr(parsed, "bozo_exception", ""))[:120], len(parsed.entries))
    records = []
    for e in parsed.entries:
        t = e.get("published_parsed") or e.get("updated_parsed")
        pub = pd.Timestamp(calendar.timegm(t), unit="s", tz="UTC") if t else None
        tags = [x.get("term", "") for x in e.get("tags", []) or []]
        records.append({"title": e.get("title"), "summary": e.get("summary") or e.get("description"),
                        "url": e.get("link"), "guid": e.get("id") or e.get("guid"), "published_at": pub,
                        "symbols": [x for x in tags if x.isupper() and 2 <= len(x) <= 6]})
    host = urlsplit(url).netloc or url
    return make_items(records, source=f"rss:{host}", fetched_at=fetched_at, aliases=config.symbols, tagger=config.assets.tagger(),
                      max_future_skew_seconds=config.items.max_future_skew_seconds)


def fetch_rss(url: str, *, config: S3Config, settings: Settings, session: requests.Session | None = None,
              now: pd.Timestamp | None = None) -> pd.DataFrame:
    resp = http_get(url, timeout=settings.http_timeout, config=config.http, session=session,
                    headers={"Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5"})
    return parse_feed(resp.body, url=url, config=config, fetched_at=now or _now())


# ---------------------------------------------------------------------- CryptoPanic
def fetch_cryptopanic(*, config: S3Config, settings: Settings, session: requests.Session | None = None,
                      now: pd.Timestamp | None = None) -> pd.DataFrame:
    """Posts of the CryptoPanic API (``GET {CRYPTOPANIC_URL}/posts/``), up to ``max_pages``."""
    if settings.cryptopanic_token is None:
        raise UserError("CRYPTOPANIC_TOKEN is not set", "put it in .env, or leave cryptopanic out of --sources")
    cp = config.sources.cryptopanic
    params = {"auth_token": settings.cryptopanic_token.get_secret_value(), "public": "true"}
    if cp.kind != "all":
        params["kind"] = cp.kind
    for k in ("currencies", "regions", "filter"):
        if getattr(cp, k):
            params[k] = getattr(cp, k)
    records = []
    for page in range(1, cp.max_pages + 1):
        resp = http_get(f"{settings.cryptopanic_url.rstrip('/')}/posts/", params={**params, "page": page},
                        timeout=settings.http_timeout, config=config.http, session=session)
        data = _json(resp.body, "CryptoPanic")
        for p in data.get("results") or []:
            if not isinstance(p, dict):
                continue
            codes = [c.get("code", "") for c in (p.get("instruments") or p.get("currencies") or [])
                     if isinstance(c, dict)]
            src = p.get("source") or {}
            records.append({"title": p.get("title"), "summary": p.get("description") or "",
                            "url": p.get("original_url") or p.get("url") or "",
                            "guid": f"cryptopanic:{p.get('id')}" if p.get("id") is not None else "",
                            "published_at": p.get("published_at") or p.get("created_at"),
                            "symbols": codes,
                            "source": f"cryptopanic:{src.get('title') or src.get('domain') or 'unknown'}"})
        if not data.get("next"):
            break
    return make_items(records, source="cryptopanic", fetched_at=now or _now(), aliases=config.symbols, tagger=config.assets.tagger(),
                      max_future_skew_seconds=config.items.max_future_skew_seconds)


# -------------------------------------------------------------------------------- X
def fetch_x(*, config: S3Config, settings: Settings, session: requests.Session | None = None,
            now: pd.Timestamp | None = None) -> pd.DataFrame:
    """Tweets of X API v2 recent search (``GET {X_API_URL}/tweets/search/recent``)."""
    if settings.x_bearer_token is None:
        raise UserError("X_BEARER_TOKEN is not set", "put it in .env, or leave x out of --sources")
    xc = config.sources.x
    headers = {"Authorization": f"Bearer {settings.x_bearer_token.get_secret_value()}"}
    params = {"query": xc.query, "max_results": xc.max_results, "tweet.fields": "created_at,lang"}
    records = []
    for _ in range(xc.max_pages):
        resp = http_get(f"{settings.x_api_url.rstrip('/')}/tweets/search/recent", params=params,
                        headers=headers, timeout=settings.http_timeout, config=config.http, session=session)
        data = _json(resp.body, "X")
        for t in data.get("data") or []:
            if not isinstance(t, dict) or not t.get("id"):
                continue
            records.append({"title": t.get("text"), "guid": f"x:{t['id']}",
                            "url": f"https://x.com/i/web/status/{t['id']}", "published_at": t.get("created_at")})
        token = (data.get("meta") or {}).get("next_token")
        if not token:
            break
        params = {**params, "next_token": token}
    return make_items(records, source="x", fetched_at=now or _now(), aliases=config.symbols, tagger=config.assets.tagger(),
                      max_future_skew_seconds=config.items.max_future_skew_seconds)


def _json(body: bytes, what: str) -> dict:
    import json

    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"{what} answered with something that is not JSON ({body[:60]!r})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{what} answered with JSON that is not an object")
    return data


# ----------------------------------------------------------------------------- file
def load_file(path: str | Path, *, config: S3Config, now: pd.Timestamp | None = None) -> pd.DataFrame:
    """Dated headlines from a CSV/Parquet (see :func:`S3.items.read_headlines`)."""
    df = read_headlines(Path(path), need_date=True, date_only=config.items.date_only)
    return make_items(df.to_dict("records"), source=f"file:{Path(path).name}", fetched_at=now or _now(),
                      aliases=config.symbols, tagger=config.assets.tagger(), max_future_skew_seconds=config.items.max_future_skew_seconds)


# --------------------------------------------------------------------------- ingest
@dataclass
class IngestReport:
    fetched: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    added: int = 0
    total: int = 0

    def lines(self) -> list[str]:
        out = [f"  {name}: {n} item(s)" for name, n in self.fetched.items()]
        out += [f"  {name}: SKIPPED ({why})" for name, why in self.failed.items()]
        out.append(f"  {self.added} new item(s) appended, {self.total} stored")
        return out


def collect(specs: list[str], *, config: S3Config | None = None, settings: Settings | None = None,
            now: pd.Timestamp | None = None, max_workers: int = 8) -> tuple[pd.DataFrame, IngestReport]:
    """Fetch every source in ``specs`` in parallel; failures are logged and reported,
    never raised (except a missing credential for a source asked for by name)."""
    config = config or load_config()
    settings = settings or get_settings()
    report = IngestReport()
    jobs: list[tuple[str, callable]] = []
    for spec in specs:
        if spec == "rss":
            for url in feed_urls(config, settings):
                jobs.append((f"rss {url.split('?', 1)[0]}",
                             lambda u=url: fetch_rss(u, config=config, settings=settings, now=now)))
        elif spec == "cryptopanic":
            if settings.cryptopanic_token is None:
                raise UserError("--sources has cryptopanic but CRYPTOPANIC_TOKEN is not set",
                                "put the token in .env, or leave cryptopanic out of --sources")
            jobs.append(("cryptopanic", lambda: fetch_cryptopanic(config=config, settings=settings, now=now)))
        elif spec == "x":
            if settings.x_bearer_token is None:
                raise UserError("--sources has x but X_BEARER_TOKEN is not set",
                                "put the token in .env, or leave x out of --sources")
            jobs.append(("x", lambda: fetch_x(config=config, settings=settings, now=now)))
        elif spec.startswith("file:"):
            path = Path(spec[5:])
            if not path.exists():
                raise UserError(f"{path} does not exist", "pass an existing CSV/Parquet with --sources file:PATH")
            jobs.append((f"file {path}", lambda p=path: load_file(p, config=config, now=now)))
    frames = []

    def run(job):
        name, fn = job
        try:
            return name, fn(), None
        except UserError as exc:
            if name.startswith("file"):
                raise
            return name, None, str(exc)
        except (FetchError, ValueError) as exc:
            return name, None, str(exc)
        except Exception as exc:  # a source must never take the others down
            return name, None, f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(jobs)))) as pool:
        for name, frame, error in pool.map(run, jobs):
            if error is not None:
                error = settings.redact(error)
                log.warning("news source %s skipped: %s", name, error)
                report.failed[name] = error
            else:
                report.fetched[name] = len(frame)
                frames.append(frame)
    frames = [f for f in frames if len(f)]
    items = pd.concat(frames, ignore_index=True) if frames else empty_items()
    return items, report


def ingest(specs: list[str], *, path: Path | None = None, config: S3Config | None = None,
           settings: Settings | None = None, now: pd.Timestamp | None = None) -> tuple[pd.DataFrame, IngestReport]:
    """Collect ``specs`` and append the new stories to the items file (atomic)."""
    config = config or load_config()
    items, report = collect(specs, config=config, settings=settings, now=now)
    allrows, added = append_items(items, path, title_window_hours=config.items.title_dedup_window_hours,
                                 tagger=config.assets.tagger())
    report.added, report.total = added, len(allrows)
    return allrows, report
