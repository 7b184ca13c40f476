"""Download the USDⓈ-M funding-rate history of a perpetual (and its open interest).

    python S1/funding.py --symbol BTCUSDT --days 365                     # -> data/btcusdt_funding.parquet
    python S1/funding.py --symbol BTCUSDT --days 30 --open-interest 1h   # + data/btcusdt_open_interest_1h.parquet
    python S1/funding.py --symbol BTCUSDT --days 90 --offline            # simulated funding, no internet

Paged (1,000 fundings per request), incremental (a re-run fetches only what is new) and atomic
(a failed run leaves the previous file as it was). Funding times come from Binance's history
(8 h, 4 h or 1 h: never assumed). Open interest: Binance keeps the last 30 days only. The
library is :mod:`S1.funding_history`; see S1/README.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from S1.cli import ArgumentParser, add_common_args, main_entry


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="S1/funding.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbol", required=True, help="USDⓈ-M perpetual, e.g. BTCUSDT")
    p.add_argument("--days", type=int, default=365, help="window up to now (default 365, as S1/historical.py)")
    p.add_argument("--open-interest", metavar="PERIOD", default=None,
                   help="also download open interest at this period (5m 15m 30m 1h 2h 4h 6h 12h 1d; "
                        "Binance keeps 30 days)")
    p.add_argument("--no-funding", action="store_true", help="only the open interest")
    from S1.options import add_offline_option

    add_offline_option(p)
    add_common_args(p)
    return p


def _pct(rate: float) -> str:
    return f"{rate * 100:+.4f} %"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from S1.errors import UserError
    from S1.funding_history import OI_PERIODS, update_funding, update_open_interest

    if args.no_funding and not args.open_interest:
        raise UserError("--no-funding leaves nothing to download", "add --open-interest 1h (or drop --no-funding)")
    if args.open_interest is not None and args.open_interest not in OI_PERIODS:
        raise UserError(f"unsupported open-interest period {args.open_interest!r}", f"use one of {', '.join(OI_PERIODS)}")
    from S1.offline import offline_mode

    with offline_mode(args.offline, days=args.days + 30, futures=True):
        return _download(args)


def _download(args) -> int:
    from S1.funding_history import update_funding, update_open_interest

    if not args.no_funding:
        r = update_funding(args.symbol, args.days)
        label = " (simulated market data)" if r.simulated else ""
        print(f"{'wrote' if r.written else 'up to date:'} {r.path}: {r.rows:,} fundings ({r.new_rows:+,} new, {r.requests} requests), "
              f"{r.start:%Y-%m-%d %H:%M} .. {r.end:%Y-%m-%d %H:%M} UTC{label}")
        if r.next_funding and r.next_funding.get("nextFundingTime"):
            import pandas as pd

            nxt = pd.Timestamp(int(r.next_funding["nextFundingTime"]), unit="ms", tz="UTC")
            print(f"  next funding {nxt:%Y-%m-%d %H:%M} UTC, estimated rate "
                  f"{_pct(float(r.next_funding.get('lastFundingRate', 0)))}, mark price {r.next_funding.get('markPrice')}")
    if args.open_interest:
        r = update_open_interest(args.symbol, args.days, args.open_interest)
        if r.note:
            print(f"note: {r.note}")
        label = " (simulated market data)" if r.simulated else ""
        print(f"{'wrote' if r.written else 'up to date:'} {r.path}: {r.rows:,} open-interest rows ({r.new_rows:+,} new, {r.requests} requests), "
              f"{r.start:%Y-%m-%d %H:%M} .. {r.end:%Y-%m-%d %H:%M} UTC{label}")
    return 0


if __name__ == "__main__":
    main_entry(main)
