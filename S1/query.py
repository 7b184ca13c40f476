"""SQL over everything in ``data/`` with DuckDB (see :mod:`S1.lake` for what is there).

    python S1/query.py --tables
    python S1/query.py "SELECT * FROM datasets"
    python S1/query.py "SELECT symbol, date_trunc('day', open_time) AS day, last(close ORDER BY open_time) AS close
                        FROM candles WHERE interval = '1h' GROUP BY ALL ORDER BY ALL" --out reports/daily.csv
    python S1/query.py --file my_query.sql --out result.parquet
    python S1/query.py --sqlite snapshot "SELECT count(*) FROM btcusdt_1m_realtime.kline"
    python S1/query.py "SELECT symbol, interval, month, count(*) FROM lake GROUP BY ALL ORDER BY ALL"   # the 1m lake

Results print as a table (``--max-rows`` rows) or go to ``--out FILE.parquet|csv``. A file
already in the data directory is never replaced by ``--out`` or a ``COPY ... TO`` of the
query unless ``--force`` is given (the datasets there are what the other sprints read).
When the query reads a source labelled simulated (a Parquet file made offline, a streamer
database written from the simulated market), a ``SIMULATED`` line after the result names it;
``--tables`` names every simulated source.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pandas as pd

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.errors import UserError
from S1.lake import SQLITE_MODES, connect, run, tables, to_frame, write_result
from S1.storage import as_path, is_remote


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python S1/query.py", description=__doc__.split("\n\n")[0])
    p.add_argument("sql", nargs="?", default=None, help='the query, e.g. "SELECT * FROM datasets" ("-": stdin)')
    p.add_argument("--file", type=Path, default=None, help="read the query from a .sql file")
    p.add_argument("--out", type=Path, default=None, help="write the result to FILE.parquet or FILE.csv")
    p.add_argument("--tables", action="store_true", help="list the views and tables of the lake")
    p.add_argument("--max-rows", type=int, default=50, help="rows to print (default 50; the rest is summarised)")
    p.add_argument("--data-dir", type=as_path, default=None,
                   help="query another data directory, a folder or s3://bucket/prefix (default DATA_DIR)")
    p.add_argument("--sqlite", choices=SQLITE_MODES, default="auto",
                   help="how to read the SQLite databases: auto (attach them through DuckDB's sqlite extension "
                        "from the duckdb-ext-sqlite package, live; else read them at connect), attach (the "
                        "extension or an error), snapshot (read at connect); --tables shows which")
    p.add_argument("--no-sqlite", action="store_true", help="do not attach the SQLite databases (faster start)")
    p.add_argument("--force", action="store_true",
                   help="let --out (or a COPY ... TO in the query) replace an existing file in the data directory")
    add_common_args(p)
    return p


def _sql(args) -> str | None:
    if args.file is not None:
        if args.sql is not None:
            raise UserError("pass the query either as an argument or with --file, not both", "drop one of them")
        if not args.file.is_file():
            raise UserError(f"--file {args.file} does not exist", "pass the path of a .sql file")
        return args.file.read_text(encoding="utf-8")
    if args.sql == "-":
        return sys.stdin.read()
    return args.sql


def _inside(path: Path, folder: Path) -> bool:
    if is_remote(folder) or is_remote(path):
        return str(path).startswith(str(folder).rstrip("/") + "/")
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_overwrite(target: Path, data_dir: Path, *, force: bool, what: str = "--out") -> None:
    """Refuse to replace an existing file of the data directory (a dataset other sprints read)
    unless ``force``: a query result is written there only on purpose."""
    if force or not target.exists() or not _inside(target, data_dir):
        return
    raise UserError(f"{what} {target} would replace an existing file in the data directory {data_dir}",
                    "write the result elsewhere (e.g. reports/), or add --force to replace it")


_COPY_TARGET = re.compile(r"\bTO\s+'((?:[^']|'')+)'", re.IGNORECASE)
_EXPORT_TARGET = re.compile(r"\bDATABASE\s+(?:\w+\s+TO\s+)?'((?:[^']|'')+)'", re.IGNORECASE)


def check_statements(con, sql: str, data_dir: Path, *, force: bool) -> None:
    """The ``COPY ... TO 'file'`` and ``EXPORT DATABASE 'dir'`` statements of ``sql`` may not
    replace files of the data directory unless ``force`` (as ``--out``)."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error:
        return   # a syntax error: reported when the query runs
    for st in statements:
        kind = str(st.type).rsplit(".", 1)[-1]
        if kind not in ("COPY", "EXPORT"):
            continue
        m = (_COPY_TARGET if kind == "COPY" else _EXPORT_TARGET).search(st.query)
        if m is None:
            continue
        target = as_path(m.group(1).replace("''", "'"))
        if kind == "EXPORT" and _inside(target, data_dir) and not force:
            raise UserError(f"EXPORT DATABASE {target} writes into the data directory {data_dir}",
                            "export elsewhere, or add --force")
        check_overwrite(target, data_dir, force=force, what=f"{kind} ... TO")


def simulated_sources(data_dir=None, sql: str | None = None) -> dict[str, str]:
    """``{SQL name: file name}`` of the lake's sources labelled simulated -- Parquet files
    whose toolkit metadata says ``simulated``, streamer databases whose ``toolkit_meta``
    does (:func:`S1.stream_store.database_simulated`). With ``sql``: only the ones it names
    (the ``candles`` view names every candles file)."""
    from S1.datasets import read_metadata
    from S1.lake import scan
    from S1.stream_store import database_simulated

    words = set(re.findall(r"[a-z_][a-z0-9_]*", sql.lower())) if sql is not None else None
    out = {}
    for e in scan(data_dir):
        if words is not None and e.name not in words and not (e.kind == "candles" and "candles" in words):
            continue
        try:
            sim = database_simulated(e.path) if e.kind == "sqlite" else read_metadata(e.path).get("simulated")
        except Exception:  # noqa: BLE001 - an unreadable file is reported by the query itself
            continue
        if sim:
            out[e.name] = e.path.name
    return out


def simulated_line(sources: dict[str, str]) -> str | None:
    """The line printed after a result that read simulated sources (None when there is none)."""
    if not sources:
        return None
    return ("SIMULATED market data (offline mode, not real prices) in: "
            + ", ".join(f"{k} ({v})" for k, v in sorted(sources.items())))


def render(df: pd.DataFrame, max_rows: int) -> str:
    """A DataFrame as a plain text table (head and tail when longer than ``max_rows``)."""
    with pd.option_context("display.max_rows", max_rows, "display.min_rows", min(max_rows, 20),
                           "display.max_columns", None, "display.width", 200,
                           "display.max_colwidth", 60):
        return df.to_string(index=False, max_rows=max_rows) if len(df) else "(no rows)"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_rows < 1:
        raise UserError(f"--max-rows must be positive, got {args.max_rows}", "e.g. --max-rows 50")
    sql = _sql(args)
    if sql is None and not args.tables:
        raise UserError("no query given", 'pass one, e.g. python S1/query.py "SELECT * FROM datasets", or --tables')
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise UserError(f"--data-dir {args.data_dir} is not a folder", "pass the folder that holds the Parquet files")
    from S1.datasets import data_dir as default_data_dir

    folder = default_data_dir(args.data_dir)
    if args.out is not None and str(args.out).startswith("s3:"):
        raise UserError(f"--out {args.out}: results are written to this machine only",
                        "pass a local file such as reports/result.parquet")
    if args.out is not None:
        check_overwrite(args.out, folder, force=args.force)
    con = connect(args.data_dir, sqlite=False if args.no_sqlite else args.sqlite)
    try:
        if sql is not None:
            check_statements(con, sql, folder, force=args.force)
        if args.tables:
            print(render(tables(con), 10_000))
            if (line := simulated_line(simulated_sources(args.data_dir))) is not None:
                print(line)
            if sql is None:
                return 0
        sim = simulated_line(simulated_sources(args.data_dir, sql)) if sql is not None else None
        t0 = time.perf_counter()
        if args.out is not None:
            path, n = write_result(con, sql, args.out)
            print(f"wrote {n:,} rows to {path} ({time.perf_counter() - t0:.2f}s)")
            if sim is not None:
                print(sim)
            return 0
        rel = run(con, sql)
        if rel is None:
            print("ok")
            return 0
        df = to_frame(rel)
        print(render(df, args.max_rows))
        print(f"({len(df):,} rows, {len(df.columns)} columns, {time.perf_counter() - t0:.2f}s)")
        if sim is not None:
            print(sim)
    finally:
        con.close()
    return 0


if __name__ == "__main__":
    main_entry(main)
