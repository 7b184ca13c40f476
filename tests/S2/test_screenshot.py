"""S2/screenshot.py: the preview app in a real headless Chromium (marked `browser`,
skipped when /usr/bin/chromium is absent), an app that fails is reported as a
failure, and the argument checks (no browser needed)."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from S1.cli import run
from S1.datasets import Dataset, dataset_path, write_parquet
from S1.errors import UserError
from S1.local.simulated import simulate_candles
from S2 import screenshot as shot
from S2.ta import add_indicators

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "S2" / "preview_streamlit.py"
chromium = pytest.mark.skipif(not Path(shot.CHROMIUM).is_file() and not os.environ.get("CHROMIUM"),
                              reason=f"no headless browser at {shot.CHROMIUM} (apt-get install -y chromium)")


@pytest.fixture
def eth_ta(settings_env):
    ta = add_indicators(simulate_candles("ETHUSDC", "1h", "2024-01-01", "2024-01-31"))
    write_parquet(ta, dataset_path(Dataset("ETHUSDC", "1h", 30), "ta"), metadata={"simulated": True})
    return ta


def _env(settings_env) -> dict:
    return {"DATA_DIR": str(settings_env.data_dir), "REPORTS_DIR": str(settings_env.reports_dir),
            "TOOLKIT_ENV_FILE": os.environ["TOOLKIT_ENV_FILE"]}


def _gone(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
    except OSError:
        return True
    return False


@pytest.mark.browser
@chromium
def test_preview_app_in_real_browser(eth_ta, settings_env, monkeypatch, tmp_path):
    # a second dataset sorts first: the title proves the app got its arguments
    write_parquet(simulate_candles("BTCUSDT", "4h", "2024-01-01", "2024-02-01"), dataset_path(Dataset("BTCUSDT", "4h", 31)))
    res = shot.screenshot(APP, tmp_path / "app.png", width=1200, height=900, env=_env(settings_env),
                          full_page=True, app_args=["--symbol", "ETHUSDC", "--interval", "1h", "--days", "30"])
    assert res.state["title"] == "ETHUSDC 1h 30d — indicators"
    assert res.state["plotly"] == 1 and res.state["plotly_drawn"] >= 1 and not res.state["running"]
    img = mpimg.imread(res.path)
    assert img.shape[1] == 1200 and img.shape[0] == res.state["height"] > 1400  # the whole page, not 900 px
    rgb = (img[..., :3] * 255).astype(np.uint8)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 200  # a drawn page, not a blank one
    # the candle colours of the chart are on the page
    teal = np.all(np.abs(rgb.astype(int) - [0x26, 0xA6, 0x9A]) <= 6, axis=-1).sum()
    red = np.all(np.abs(rgb.astype(int) - [0xEF, 0x53, 0x50]) <= 6, axis=-1).sum()
    assert teal > 500 and red > 500, (teal, red)
    assert _gone(res.url)  # streamlit was stopped


@pytest.mark.browser
@chromium
def test_an_app_error_fails_the_cli_and_writes_nothing(tmp_path, capsys):
    app = tmp_path / "broken.py"
    app.write_text("import streamlit as st\nst.title('about to fail')\nraise RuntimeError('boom in the app')\n")
    out = tmp_path / "never.png"
    assert run(shot.main, [str(app), "--out", str(out), "--window-size", "800,600", "--wait", "40"]) == 3
    err = capsys.readouterr().err
    assert "error: the app shows an error: " in err and "boom in the app" in err and err.count("\n") == 1
    assert not out.exists()


def test_argument_checks(tmp_path, monkeypatch, capsys):
    with pytest.raises(UserError, match="app nope.py does not exist"):
        shot.screenshot("nope.py", tmp_path / "x.png")
    app = tmp_path / "a.py"
    app.write_text("")
    with pytest.raises(UserError, match=r"no headless browser at /nonexistent/chromium -- install it"):
        shot.screenshot(app, tmp_path / "x.png", chromium="/nonexistent/chromium")
    assert run(shot.main, [str(app), "--window-size", "big"]) == 2
    assert "--window-size 'big' is not WIDTH,HEIGHT" in capsys.readouterr().err
    monkeypatch.setenv("CHROMIUM", "/nonexistent/chromium")
    assert run(shot.main, [str(app), "--out", str(tmp_path / "x.png")]) == 2
    assert "no headless browser at /nonexistent/chromium" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_free_port_is_bindable():
    import socket

    port = shot.free_port()
    assert isinstance(port, int) and 1024 <= port <= 65535   # an unprivileged port the OS handed out
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))                          # raises OSError when it is taken
        assert s.getsockname() == ("127.0.0.1", port)
