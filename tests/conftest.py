"""Shared fixtures. Real data comes from ``../shared`` (beside the checkout) when it
is there; tests that need it skip with a reason when it is not."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TOOLKIT_SHARED_DIR", REPO.parent / "shared"))

# ------------------------------------------------------------------ isolation from the checkout
#: the checkout's own output folders: no test may create or change a file there (checked at the end)
CHECKOUT_OUTPUTS = (REPO / "data", REPO / "reports")
#: settings that name folders; each test process points them at its own session-wide temp folder
ISOLATED_DIRS = {"DATA_DIR": "data", "REPORTS_DIR": "reports", "LOCAL_STATE_DIR": "local_state"}
_TMP_ROOT = pytest.StashKey[Path]()
_CHECKOUT_BEFORE = pytest.StashKey[dict]()
_LEAKS = pytest.StashKey[list]()


def checkout_outputs() -> dict[str, int]:
    """``{path relative to the checkout: mtime_ns}`` of every file under :data:`CHECKOUT_OUTPUTS`."""
    out = {}
    for folder in CHECKOUT_OUTPUTS:
        if folder.is_dir():
            for f in folder.rglob("*"):
                if f.is_file():
                    out[f.relative_to(REPO).as_posix()] = f.stat().st_mtime_ns
    return out


def pytest_configure(config):
    """Before collection: DATA_DIR, REPORTS_DIR and LOCAL_STATE_DIR point at a temp folder for the
    whole session (subprocesses inherit them; ``settings_env`` narrows them per test), and the
    checkout's data/ and reports/ are listed to be compared at the end."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="toolkit-tests-"))
    config.stash[_TMP_ROOT] = root
    for key, name in ISOLATED_DIRS.items():
        os.environ[key] = str(root / name)
    config.stash[_CHECKOUT_BEFORE] = checkout_outputs()
    import sys

    if "S1.settings" in sys.modules:
        sys.modules["S1.settings"].get_settings.cache_clear()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when a test created or changed a file in the checkout's data/ or reports/
    (checked once, by the xdist controller or the single process)."""
    config = session.config
    if hasattr(config, "workerinput") or _CHECKOUT_BEFORE not in config.stash:
        return
    before, now = config.stash[_CHECKOUT_BEFORE], checkout_outputs()
    leaks = sorted(p for p, mtime in now.items() if before.get(p) != mtime)
    config.stash[_LEAKS] = leaks
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    leaks = config.stash.get(_LEAKS, [])
    if leaks:
        terminalreporter.write_line(
            f"FAILED: the tests wrote {len(leaks)} file(s) into the checkout ({', '.join(leaks[:10])}); "
            "tests must write under tmp_path or the session's DATA_DIR/REPORTS_DIR", red=True)


def pytest_unconfigure(config):
    import shutil

    root = config.stash.get(_TMP_ROOT, None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)



#: tests that take more than a few seconds on a 2-core machine (``make test-fast`` leaves them out);
#: one node id, ``file::test`` (every parametrisation) or file per line -- besides ``@pytest.mark.slow``
SLOW_LIST = Path(__file__).with_name("slow_tests.txt")


def _slow_ids() -> set[str]:
    if not SLOW_LIST.exists():
        return set()
    lines = (ln.split("#", 1)[0].strip() for ln in SLOW_LIST.read_text(encoding="utf-8").splitlines())
    return {ln for ln in lines if ln}


def pytest_collection_modifyitems(config, items):
    slow_ids = _slow_ids()
    if slow_ids:
        slow = pytest.mark.slow
        for item in items:
            nodeid = item.nodeid
            base = nodeid.split("[", 1)[0]
            if nodeid in slow_ids or base in slow_ids or nodeid.split("::", 1)[0] in slow_ids:
                item.add_marker(slow)
    if os.environ.get("RUN_INTERNET_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="needs the real internet (set RUN_INTERNET_TESTS=1)")
    for item in items:
        if "internet" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` -- skip the test cleanly when it is absent."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"real data folder {SHARED} is absent")
    return SHARED


@pytest.fixture
def settings_env(tmp_path, monkeypatch):
    """Isolated settings: data and reports under tmp_path, no .env file, no keys.

    Tests change further settings with ``monkeypatch.setenv`` and then call
    ``S1.settings.get_settings.cache_clear()``.
    """
    from S1.settings import get_settings

    empty_env = tmp_path / "empty.env"
    empty_env.write_text("")
    monkeypatch.setenv("TOOLKIT_ENV_FILE", str(empty_env))
    for key in list(os.environ):
        if key.startswith(("BINANCE_", "OPENAI_", "CRYPTOPANIC_", "X_BEARER", "ALERT_WEBHOOK")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("REPORTS_DIR", str(tmp_path / "reports"))
    # the Settings class reads its env_file at class creation; pass it per instance
    import S1.settings as settings_mod

    monkeypatch.setitem(settings_mod.Settings.model_config, "env_file", str(empty_env))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def btc_1h_real(shared_dir) -> pd.DataFrame:
    """Real Binance BTCUSDT 1h candles, Jan-May 2023 (3,623 rows, one real gap)."""
    from S1.kline_files import sniff_and_read

    files = sorted((shared_dir / "data/klines/binance_dump").glob("BTCUSDT-1h-2023-*.csv"))
    return pd.concat([sniff_and_read(p, "1h") for p in files]).sort_index()


@pytest.fixture(scope="session")
def btc_1h_sim() -> pd.DataFrame:
    """Simulated BTCUSDT 1h candles (2023-01-01 .. 2023-06-01), for tests that must
    run without ``../shared``."""
    from S1.local.simulated import simulate_candles

    return simulate_candles("BTCUSDT", "1h", "2023-01-01", "2023-06-01")


@pytest.fixture(scope="session")
def btc_1h(request) -> pd.DataFrame:
    """Real BTCUSDT 1h candles when ``../shared`` is present, simulated otherwise."""
    if (SHARED / "data").is_dir():
        return request.getfixturevalue("btc_1h_real")
    return request.getfixturevalue("btc_1h_sim")


#: the local exchange's clock in the ``exchange`` fixture: mid-candle, so the 12:00 candle is in progress
SERVER_NOW = "2023-05-31 12:30"


@pytest.fixture
def exchange(btc_1h, settings_env, monkeypatch):
    """A running local Binance server (REST + archive) serving BTCUSDT 1h Jan-May 2023 (real when
    ``../shared`` is present) with its clock at 2023-05-31 12:30 UTC, and settings pointed at it."""
    from S1.intervals import to_ms
    from S1.local.exchange import LocalBinance
    from S1.settings import get_settings

    with LocalBinance(now_ms=to_ms(SERVER_NOW)) as ex:
        ex.add_candles("BTCUSDT", "1h", btc_1h)
        monkeypatch.setenv("BINANCE_API_URL", ex.api_url)
        monkeypatch.setenv("BINANCE_ARCHIVE_URL", ex.url)
        monkeypatch.setenv("HTTP_MAX_RETRIES", "3")
        get_settings.cache_clear()
        yield ex
    get_settings.cache_clear()
