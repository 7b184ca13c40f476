# Entry points a newcomer needs (see README.md):
#   make demo   -- install everything into .venv/ and run the main job end to end
#   make test   -- install everything into .venv/ and run the test suite (what CI runs), on every core
#   make test-fast -- the suite without the tests marked slow (~1-2 min; every sprint still covered)
#   make test-serial -- the whole suite in one process (no pytest-xdist)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# pytest-xdist workers (auto = one per core); each test's servers take free ports and temp dirs
WORKERS ?= auto

.PHONY: setup demo test test-fast test-serial bench clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found %s); set PYTHON=python3.11" % sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --only-binary=:all: -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: setup
	$(BIN)/python -m S7.pipeline $(ARGS)

test: setup
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile $(ARGS)

test-fast: setup
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile -m "not slow" $(ARGS)

test-serial: setup
	$(BIN)/python -m pytest -p no:xdist $(ARGS)

bench: setup
	$(BIN)/python bench/bench_history.py --quick
	$(BIN)/python bench/bench_indicators.py
	$(BIN)/python bench/bench_signals.py
	$(BIN)/python bench/bench_backtest.py
	$(BIN)/python bench/bench_query.py
	$(BIN)/python bench/bench_streamer.py
	$(BIN)/python bench/bench_executor.py
	$(BIN)/python bench/bench_orderbook.py --duration 60
	$(BIN)/python bench/bench_lake.py --symbols 10 --days 366
	$(BIN)/python bench/bench_s3.py
	$(BIN)/python bench/bench_fanout.py
	$(BIN)/python bench/bench_optimize_workers.py
	$(BIN)/python bench/bench_walkforward_workers.py
	$(BIN)/python bench/bench_portfolio.py
	$(BIN)/python bench/bench_shorts.py
	$(BIN)/python bench/bench_risk.py
	$(BIN)/python bench/bench_bus.py
	$(BIN)/python bench/bench_service.py --markets 20 --duration 60

clean-venv:
	rm -rf $(VENV)
