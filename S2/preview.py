"""Save (and show, when a display exists) a PNG preview of an indicator file.

    python S2/preview.py --symbol ETHUSDC --interval 1h --days 365 --rows 1000
    python S2/preview.py --symbol BTCUSDT --interval 4h --days 90 --no-show

reads ``data/ethusdc_1h_365d_ta.parquet`` (made by S2/indicators.py) and writes
``reports/ethusdc_1h_365d_preview.png``: 1) close + SMA/EMA + Bollinger Bands,
2) RSI with the 30/70 zones, 3) MACD + signal + histogram.
"""

from __future__ import annotations

from typing import Sequence

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.datasets import Dataset, dataset_path, report_path


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="S2/preview.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbol", required=True, help="e.g. ETHUSDC")
    p.add_argument("--interval", default="1h", help="Binance interval (default 1h, as S1/historical.py)")
    p.add_argument("--days", type=int, default=365, help="window of the file (default 365, as S1/historical.py)")
    p.add_argument("--rows", type=int, default=1000, help="plot the last N candles (default 1000)")
    p.add_argument("--start", help="first open time to plot, UTC (YYYY-MM-DD[ HH:MM])")
    p.add_argument("--end", help="last open time to plot, UTC (a bare date includes that day)")
    p.add_argument("--no-show", action="store_true", help="only save the PNG, never open a window")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ds = Dataset.from_args(args)
    from S2 import plots
    from S2.ta_io import is_simulated, load_ta

    show = not args.no_show and plots.has_display()
    if not show:
        import matplotlib

        matplotlib.use("Agg")
    ta = load_ta(ds)
    window = plots.select_window(ta, start=args.start, end=args.end, rows=args.rows)
    simulated = is_simulated(dataset_path(ds, "ta"))
    title = (f"{ds.symbol} {ds.interval} -- {len(window):,} candles "
             f"{window.index[0]:%Y-%m-%d %H:%M} .. {window.index[-1]:%Y-%m-%d %H:%M} UTC"
             + (" -- SIMULATED market data" if simulated else ""))
    fig = None
    if show:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(13, 9), layout="constrained")
    fig = plots.preview_figure(window, title=title, fig=fig)
    out = plots.save_png(fig, report_path(ds, "preview", "png"))
    print(f"saved {out}")
    if show:
        plt.show()
    return 0


if __name__ == "__main__":
    main_entry(main)
