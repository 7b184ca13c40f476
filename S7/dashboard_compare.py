"""The dashboard's "Runs side by side" section: every backtest, optimisation,
walk-forward and parity run on disk (:mod:`S5.run_catalog`, the same catalog as
``python S5/compare.py``), filtered and sorted, with their equity curves overlaid
and normalised to the same start.

The data part (:func:`compare_data`) is plain pandas so it is tested without
Streamlit; :func:`compare_section` draws it.

>>> import tempfile; from pathlib import Path
>>> empty = Path(tempfile.mkdtemp())
>>> table, curves = compare_data(data=empty, reports=empty)
>>> table.empty, curves
(True, {})
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

ANCHOR = "compare"
TITLE = "Runs side by side"
COMMAND = "python S5/compare.py"


def compare_data(*, symbols: list[str] | None = None, kinds: list[str] | None = None, sort: str | None = None,
                 data: Path | None = None, reports: Path | None = None) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """``(table, curves)``: the runs (one row each, :data:`S5.run_catalog.COLUMNS`) of
    ``symbols`` / ``kinds`` (all when None), best first by ``sort``, and the
    normalised equity curve of each run that wrote one."""
    from S5.run_catalog import Catalog, load_catalog

    cat = load_catalog(data=data, reports=reports)
    runs = [r for r in cat.runs if (not symbols or r.symbol in symbols) and (not kinds or r.kind in kinds)]
    if sort is None:
        runs = sorted(runs, key=lambda r: r.created or "", reverse=True)
    cat = Catalog(runs, cat.skipped).sorted(sort)
    return cat.table(), cat.curves()


def compare_section() -> None:
    """Draw the section (Streamlit); nothing at all while there is no run on disk (the
    backtest section already names the command that makes one)."""
    import streamlit as st

    from S5.run_catalog import COMPARE_METRICS, KINDS, curves_figure

    table, _ = compare_data()
    if table.empty:
        return
    st.header(TITLE, anchor=ANCHOR)
    from S5.run_catalog import load_catalog

    for note in load_catalog().notes:     # runs saved under the older file names: listed, named once
        st.caption(note)
    c = st.columns([2, 2, 1])
    syms = sorted(s for s in table["symbol"].dropna().unique())
    kinds = [k for k in KINDS if k in set(table["kind"])]
    picked_s = c[0].multiselect("Markets", syms, default=syms, key="cmp-symbols")
    picked_k = c[1].multiselect("Kinds", kinds, default=kinds, key="cmp-kinds")
    sort = c[2].selectbox("Sort by", ["(newest files first)", *COMPARE_METRICS], index=0, key="cmp-sort")
    table, curves = compare_data(symbols=picked_s or None, kinds=picked_k or None,
                                 sort=None if sort.startswith("(") else sort)
    if table["simulated"].eq(True).any():
        st.warning(f"{int(table['simulated'].eq(True).sum())} of {len(table)} run(s) were made from the SIMULATED "
                   "market (offline mode): not real prices.")
    shown = table.drop(columns=["kind", "file"])
    pct = {m: st.column_config.NumberColumn(format="percent") for m in
           ("total_return", "cagr", "max_drawdown", "win_rate", "exposure", "buy_and_hold_return")}
    st.dataframe(shown, hide_index=True, width="stretch", key="compare-table", column_config=pct)
    st.caption(f"In-sample rows are the data the parameters were chosen on. The same table in the terminal: "
               f"`{COMMAND}` (also writes reports/compare.html).")
    if curves:
        st.plotly_chart(curves_figure(curves, title="Equity, normalised to 1 at each run's start"),
                        key="compare-curves")


__all__ = ["ANCHOR", "TITLE", "compare_data", "compare_section"]
