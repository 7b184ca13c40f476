"""Add technical indicators to an S1 candle file.

    python S2/indicators.py --symbol ETHUSDC --interval 1h --days 365
    python S2/indicators.py --symbol BTCUSDT --interval 1m --days 30 --sma 20,50,200 --rsi 7,14
    python S2/indicators.py --symbol BTCUSDT --interval 1h --days 365 --informative 4h 1d

reads ``data/ethusdc_1h_365d.parquet`` and writes ``data/ethusdc_1h_365d_ta.parquet``
(every S1 column plus sma50 ema21 rsi14 MACD_12_26_9 MACDh_12_26_9 MACDs_12_26_9
BBL_20_2.0 BBM_20_2.0 BBU_20_2.0 BBB_20_2.0 BBP_20_2.0 atr14 natr14). Lengths come
from ``S2/config.yaml`` (or ``--config``) and the flags below override them.
``--informative 4h 1d`` adds every indicator and open/high/low/close/volume of the
4h and daily candles (resampled from the same file) as ``<column>_4h`` / ``<column>_1d``,
each row holding the last higher-timeframe candle closed by that row's close
(:mod:`S2.informative`). The computation lives in :mod:`S2.ta`; the files in :mod:`S2.ta_io`.
"""

from __future__ import annotations

from typing import Sequence

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.datasets import Dataset
from S2.ta import DEFAULT_CONFIG_PATH, load_config
from S2.ta_io import make_ta_file


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="S2/indicators.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbol", required=True, help="e.g. ETHUSDC")
    p.add_argument("--interval", default="1h", help="Binance interval (default 1h, as S1/historical.py)")
    p.add_argument("--days", type=int, default=365, help="window of the S1 file (default 365, as S1/historical.py)")
    default = DEFAULT_CONFIG_PATH.relative_to(DEFAULT_CONFIG_PATH.parents[1])
    p.add_argument("--config", default=None, help=f"YAML of indicator lengths (default {default})")
    g = p.add_argument_group("lengths (override the config file)")
    g.add_argument("--sma", metavar="N[,N..]", help="SMA length(s), e.g. 50 or 20,50,200")
    g.add_argument("--ema", metavar="N[,N..]", help="EMA length(s), e.g. 21")
    g.add_argument("--rsi", metavar="N[,N..]", help="Wilder RSI length(s), e.g. 14")
    g.add_argument("--macd", metavar="FAST,SLOW,SIGNAL", help="e.g. 12,26,9")
    g.add_argument("--bb", metavar="LENGTH,STD", help="Bollinger length and std multiplier, e.g. 20,2")
    g.add_argument("--atr", metavar="N[,N..]", help="Wilder ATR/NATR length(s), e.g. 14")
    p.add_argument("--informative", nargs="+", metavar="INTERVAL", default=(),
                   help="higher intervals whose candles and indicators are added as <column>_<interval> "
                        "(e.g. --informative 4h 1d -> rsi14_4h, close_1d); only closed candles are used")
    p.add_argument("--from-lake", nargs="?", const="binance/spot", default=None, metavar="EXCHANGE/MARKET",
                   help="read the candles from the 1m lake (data/lake, S1/README_lake.md: the last --days days) "
                        "instead of the S1 file; default binance/spot")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ds = Dataset.from_args(args)
    config = load_config(args.config, sma=args.sma, ema=args.ema, rsi=args.rsi, macd=args.macd,
                         bbands=args.bb, atr=args.atr)
    res = make_ta_file(ds, config=config, informative=args.informative,
                       from_lake=args.from_lake)
    label = " (simulated market data)" if res.simulated else ""
    print(f"wrote {res.path}: {res.rows:,} rows, {len(res.columns)} indicator columns "
          f"({', '.join(res.columns)}); the first {res.warmup} rows are warm-up{label}")
    if res.informative:
        first = res.metadata["informative"]["first_valid"]
        for i in res.informative:
            valid = [v for k, v in first.items() if k.endswith(f"_{i}") and v is not None]
            print(f"  + {i}: {len(first) // len(res.informative)} columns <column>_{i} (last closed {i} candle); "
                  f"all set from {max(valid) if valid else 'never (window too short)'}")
    return 0


if __name__ == "__main__":
    main_entry(main)
