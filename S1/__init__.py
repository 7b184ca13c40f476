"""Sprint 1: foundation (settings, dataset names, Parquet I/O) and Binance kline history.

Library modules here are shared by every later sprint:

- :mod:`S1.settings`  -- the typed settings object read from ``.env`` / environment
- :mod:`S1.intervals` -- Binance interval names and UTC bucket arithmetic
- :mod:`S1.datasets`  -- dataset file names, the candle schema, atomic Parquet I/O
- :mod:`S1.cli`       -- one-line errors and exit codes for the sprint scripts
"""
