"""Fetch news into data/news_items.parquet (deduplicated, idempotent, atomic).

    python S3/news.py                                  # RSS (+ CryptoPanic / X when their tokens are set)
    python S3/news.py --sources rss,cryptopanic
    python S3/news.py --sources file:old_headlines.csv # dated headlines: date/published_at + headline/title

A source that fails (network, HTTP error, malformed feed) is reported and skipped.
"""

from __future__ import annotations

from S1.cli import main_entry
from S3.cli_common import parser, quiet_http_logs


def main(argv=None) -> int:
    p = parser("fetch news items (RSS/Atom, CryptoPanic, X, CSV/Parquet) into data/news_items.parquet")
    p.add_argument("--sources", default=None,
                   help="comma-separated: rss, cryptopanic, x, file:PATH (default: rss + sources with tokens)")
    args = p.parse_args(argv)
    quiet_http_logs()
    from S1.datasets import news_items_path
    from S3.config import load_config
    from S3.sources import default_specs, ingest, parse_source_specs

    config = load_config(args.config)
    specs = parse_source_specs(args.sources) or default_specs()
    _, report = ingest(specs, config=config)
    print(f"news sources -> {news_items_path()}")
    print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    main_entry(main)
