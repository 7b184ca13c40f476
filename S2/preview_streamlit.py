"""Interactive preview of candles and indicators (Streamlit).

    streamlit run S2/preview_streamlit.py -- --symbol ethusdc --interval 1h --days 365

Sidebar: dataset picker (every candle / ``_ta`` file in the data directory; the
arguments pick the initial one), date range (UTC), SMA / EMA / Bollinger toggles,
panels, and the indicator lengths (changing them recomputes in memory with
:func:`S2.ta.add_indicators`, so does picking a candle file with no ``_ta`` file).
Main area: candlesticks + volume, RSI with its 30/70 zones, MACD + histogram,
ATR, and NATR (% of close). A real-browser screenshot:
``python S2/screenshot.py S2/preview_streamlit.py -- --symbol ...``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import streamlit as st

from S1.cli import streamlit_entry
from S1.datasets import CANDLE_COLUMNS, data_dir, history_command, read_candles, read_metadata
from S1.errors import UserError
from S2.charts import indicator_chart
from S2.ta import IndicatorConfig, add_indicators, config_from_columns, find_columns, load_config
from S2.ta_io import DatasetName, indicators_command, list_datasets, read_ta

DEFAULT_CANDLES = 1000   # initial date range: about the last 1,000 candles
RUN_HINT = "streamlit run S2/preview_streamlit.py -- --symbol ETHUSDC --interval 1h --days 365"
PANEL_NAMES = {"volume": "Volume", "rsi": "RSI", "macd": "MACD", "atr": "ATR", "natr": "NATR %"}


def build_parser() -> argparse.ArgumentParser:
    """The app's options (``python S2/preview_streamlit.py --help`` prints them)."""
    p = argparse.ArgumentParser(prog="S2/preview_streamlit.py", add_help=False, exit_on_error=False,
                                description=f"Interactive preview of candles and indicators. Run it with: {RUN_HINT}")
    p.add_argument("--symbol", help="dataset shown first, e.g. ETHUSDC (default: the first one found)")
    p.add_argument("--interval", help="its interval, e.g. 1h")
    p.add_argument("--days", type=int, help="its window in days, e.g. 365")
    p.add_argument("--max-candles", type=int, default=5000, help="most candles drawn at once (default 5000)")
    return p


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    try:
        return build_parser().parse_known_args(argv)
    except argparse.ArgumentError as exc:
        raise UserError(f"bad app argument: {exc}",
                        f"e.g. {RUN_HINT}")


# ----------------------------------------------------------------------------- data
@st.cache_resource(show_spinner="reading the dataset ...", max_entries=4)
def _read(path: str, mtime_ns: int, kind: str) -> tuple[pd.DataFrame, dict]:
    """Read once per file version (cache_resource: shared, never mutated below)."""
    p = Path(path)
    df = read_ta(p) if kind == "ta" else read_candles(p)
    return df, read_metadata(p)


@st.cache_resource(show_spinner="computing indicators ...", max_entries=4)
def _recompute(path: str, mtime_ns: int, kind: str, config_json: str) -> pd.DataFrame:
    df, _ = _read(path, mtime_ns, kind)
    candles = df[[c for c in df.columns if c in CANDLE_COLUMNS]]  # drop the file's own indicator columns
    return add_indicators(candles, config=IndicatorConfig(**json.loads(config_json)), what=Path(path).name)


def _datasets() -> dict[tuple, dict[str, Path]]:
    """``{(symbol, interval, days, exchange): {"ta": path, "candles": path}}``."""
    groups: dict[tuple, dict[str, Path]] = {}
    for row in list_datasets(("candles", "ta")).itertuples():
        groups.setdefault((row.symbol, row.interval, row.days, row.exchange), {})[row.kind] = row.path
    return groups


def _label(key: tuple, files: dict[str, Path]) -> str:
    name = DatasetName(key[0], key[1], key[2], exchange=key[3]).label
    return f"{name} · indicators" if "ta" in files else f"{name} · candles (indicators computed here)"


def _config_inputs(base: IndicatorConfig) -> IndicatorConfig:
    with st.sidebar.expander("Indicator lengths"):
        def row(label: str, value) -> str:
            return st.text_input(label, ",".join(str(v) for v in value), key=f"len-{label}")

        values = dict(sma=row("SMA", base.sma), ema=row("EMA", base.ema), rsi=row("RSI", base.rsi),
                      macd=row("MACD fast,slow,signal", base.macd),
                      bbands=row("Bollinger length,std", base.bbands), atr=row("ATR / NATR", base.atr))
        try:
            return IndicatorConfig(**values)
        except UserError as exc:
            st.error(str(exc))
            return base


# ------------------------------------------------------------------------------ app
def main(argv: list[str]) -> None:
    st.set_page_config(page_title="S2 indicators", layout="wide")
    args, ignored = parse_args(argv)
    if ignored:
        st.sidebar.caption(f"ignored arguments: {' '.join(ignored)}")
    groups = _datasets()
    wanted = None
    if args.symbol and args.interval and args.days:
        wanted = DatasetName(args.symbol.upper(), args.interval, args.days)
        wanted_key = (wanted.symbol, wanted.interval, wanted.days, None)
        if wanted_key not in groups:
            st.warning(f"{wanted.path('ta').name} is not in {data_dir()}: create it with "
                       f"`{history_command(wanted.dataset)}` then `{indicators_command(wanted.dataset)}`")
    if not groups:
        st.error(f"No datasets in {data_dir()}. Create one with "
                 "`python S1/historical.py --symbol BTCUSDT --interval 1h --days 365` then "
                 "`python S2/indicators.py --symbol BTCUSDT --interval 1h --days 365`.")
        st.stop()

    keys = sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3] or ""))
    default = keys.index(wanted_key) if wanted and wanted_key in groups else 0
    st.sidebar.header("Dataset")
    key = st.sidebar.selectbox("Dataset", keys, index=default, format_func=lambda k: _label(k, groups[k]),
                               label_visibility="collapsed")
    files = groups[key]
    kind = "ta" if "ta" in files else "candles"
    path = files[kind]
    mtime = path.stat().st_mtime_ns
    frame, meta = _read(str(path), mtime, kind)

    file_config = meta.get("indicators", {}).get("config")
    if file_config:
        base = IndicatorConfig(**file_config)
    else:  # a _ta file without metadata: its columns tell; a candle file: S2/config.yaml
        base = config_from_columns(frame.columns) if kind == "ta" else load_config()
    config = _config_inputs(base)
    if kind == "candles" or config != base:
        frame = _recompute(str(path), mtime, kind, json.dumps(config.to_dict()))

    # -- date range
    first, last = frame.index[0], frame.index[-1]
    start_default = frame.index[max(0, len(frame) - DEFAULT_CANDLES)]
    picked = st.sidebar.date_input("Date range (UTC)", value=(start_default.date(), last.date()),
                                   min_value=first.date(), max_value=last.date(), key=f"range-{key}")
    picked = list(picked) if isinstance(picked, (tuple, list)) else [picked]
    start = picked[0] if picked else start_default.date()
    end = picked[1] if len(picked) > 1 else last.date()  # while only the first date is picked
    lo = pd.Timestamp(start, tz="UTC")
    hi = pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)
    window = frame[(frame.index >= lo) & (frame.index < hi)]

    st.sidebar.header("Overlays")
    show_sma = st.sidebar.toggle("SMA", value=True)
    show_ema = st.sidebar.toggle("EMA", value=True)
    show_bb = st.sidebar.toggle("Bollinger Bands", value=True)
    panels = st.sidebar.multiselect("Panels", list(PANEL_NAMES), default=list(PANEL_NAMES),
                                    format_func=PANEL_NAMES.get)

    label = DatasetName(key[0], key[1], key[2], exchange=key[3]).label
    st.title(f"{label} — indicators")
    if meta.get("simulated"):
        st.warning("Simulated market data (S1 offline mode): not real prices.")
    if window.empty:
        st.warning(f"No candles between {start} and {end}; "
                   f"the file covers {first:%Y-%m-%d} .. {last:%Y-%m-%d}.")
        st.stop()
    if len(window) > args.max_candles:
        st.info(f"{len(window):,} candles in the range: drawing the last {args.max_candles:,}. "
                "Narrow the date range to see earlier ones.")
        window = window.iloc[-args.max_candles:]
    st.caption(f"{path.name} · {len(window):,} candles · {window.index[0]:%Y-%m-%d %H:%M} .. "
               f"{window.index[-1]:%Y-%m-%d %H:%M} UTC"
               + ("" if kind == "ta" and config == base else " · indicators computed in this app"))

    c = window["close"]
    cols = st.columns(4)
    change = (c.iloc[-1] / c.iloc[0] - 1) * 100
    cols[0].metric("Last close", f"{c.iloc[-1]:,.6g}", f"{change:+.2f} % in range")
    found = find_columns(window.columns)  # whatever lengths made the file
    if found.rsi:
        cols[1].metric(f"RSI {found.rsi[0][3:]}", f"{window[found.rsi[0]].iloc[-1]:.1f}")
    if found.natr:
        cols[2].metric(f"NATR {found.natr[0][4:]} %", f"{window[found.natr[0]].iloc[-1]:.3f}")
    cols[3].metric("Candles", f"{len(window):,}")

    fig = indicator_chart(window, sma=show_sma, ema=show_ema, bbands=show_bb, panels=tuple(panels),
                          name=key[0])
    st.plotly_chart(fig, config={"displaylogo": False}, key="chart")
    with st.expander("Last rows"):
        st.dataframe(window.tail(200).iloc[::-1])


if __name__ == "__main__":
    streamlit_entry(main, hint=RUN_HINT, build_parser=build_parser)
