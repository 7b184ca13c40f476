"""Offline mode for S3: the one door from product code to the local news server and simulated feed.

Product modules never import :mod:`S3.local` directly (``tests/test_architecture.py`` checks it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def simulated_rss(*, symbol: str = "BTCUSDT", days: int = 365, end=None, per_day: int = 4) -> bytes:
    """A deterministic *simulated* RSS feed (see :func:`S3.local.simulated_news.simulated_rss`):
    market-wide, the same whichever ``symbol`` is asked for (kept for compatibility)."""
    from S3.local.simulated_news import simulated_rss as _rss

    return _rss(symbol=symbol, days=days, end=end, per_day=per_day)


@contextmanager
def local_news(*, symbol: str = "BTCUSDT", days: int = 365) -> Iterator[dict[str, str]]:
    """Serve the simulated market-wide RSS feed on 127.0.0.1; yield ``{"NEWS_FEEDS": url}`` for S3's
    sources. Every symbol's run serves the same feed, so the stored items do not grow with each symbol."""
    from S3.local.news import LocalNews

    news = LocalNews().start()
    try:
        yield {"NEWS_FEEDS": news.add_feed("simulated", simulated_rss(symbol=symbol, days=days))}
    finally:
        news.stop()


@contextmanager
def offline_news(flag: bool = False, *, days: int = 365) -> Iterator[dict[str, str] | None]:
    """The ``--offline`` of the S3 commands: when :func:`S1.offline.offline_requested` (``--offline`` or
    ``OFFLINE=1``), serve the simulated news feed locally for the ``with`` block, point this process's
    settings at it (``NEWS_FEEDS``, ``SIMULATED_MARKET=1``: outputs labelled simulated) and yield that
    environment; otherwise yield None and change nothing."""
    import sys

    from S1.offline import OFFLINE_BANNER, environment, offline_requested

    if not offline_requested(flag):
        yield None
        return
    print(OFFLINE_BANNER.replace("local exchange on a SIMULATED market", "local SIMULATED news feed"),
          file=sys.stderr, flush=True)
    with local_news(days=days) as env:
        env = {**env, "SIMULATED_MARKET": "1"}
        with environment(env):
            yield dict(env)
