"""S2/plots.py and S2/preview.py: the three-panel PNG, the price/volume figure,
window selection, display detection and the CLI (saved under the reports dir)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from S1.cli import run  # noqa: E402
from S1.datasets import Dataset, dataset_path, report_path, write_parquet  # noqa: E402
from S1.errors import UserError  # noqa: E402
from S1.local.simulated import simulate_candles  # noqa: E402
from S2 import plots, preview  # noqa: E402
from S2.ta import IndicatorConfig, add_indicators  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ta_frame():
    return add_indicators(simulate_candles("ETHUSDC", "1h", "2024-01-01", "2024-01-21"))


@pytest.fixture
def ta_file(settings_env, ta_frame):
    return write_parquet(ta_frame, dataset_path(Dataset("ETHUSDC", "1h", 20), "ta"), metadata={"simulated": True})


def _png_ok(path: Path, min_colors: int = 20) -> np.ndarray:
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 400 and img.shape[1] > 600
    colors = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colors) >= min_colors, "the image is (nearly) blank"
    return img


def test_preview_figure_panels(ta_frame):
    fig = plots.preview_figure(ta_frame, title="t")
    ax1, ax2, ax3 = fig.axes
    labels = [line.get_label() for line in ax1.get_lines()]
    assert {"close", "SMA 50", "EMA 21"} <= set(labels)
    assert any("Bollinger 20_2.0" in c.get_label() for c in ax1.collections)
    assert ax2.get_ylabel() == "RSI 14" and ax2.get_ylim() == (0, 100)
    assert sorted(round(line.get_ydata()[0]) for line in ax2.get_lines()[:2]) == [30, 70]
    close_line = next(line for line in ax1.get_lines() if line.get_label() == "close")
    np.testing.assert_array_equal(close_line.get_ydata(), ta_frame["close"].to_numpy())
    hist = next(c for c in ax3.collections if c.get_label() == "histogram")
    assert len(hist.get_paths()) == len(ta_frame)  # one histogram bar per candle
    tops = np.array([p.vertices[1, 1] for p in hist.get_paths()])
    np.testing.assert_allclose(tops, np.nan_to_num(ta_frame["MACDh_12_26_9"].to_numpy()))
    assert {line.get_label() for line in ax3.get_lines()} >= {"MACD", "signal"}


def test_preview_follows_other_lengths_and_missing_panels(ta_frame):
    df = ta_frame.iloc[:, :10]
    ta = add_indicators(df, config=IndicatorConfig(sma=(10, 30), ema=9, rsi=7, macd=(5, 13, 4)))
    fig = plots.preview_figure(ta)
    assert {"SMA 10", "SMA 30", "EMA 9"} <= {line.get_label() for line in fig.axes[0].get_lines()}
    assert fig.axes[1].get_ylabel() == "RSI 7" and fig.axes[2].get_ylabel() == "MACD 5/13/4"
    bare = plots.preview_figure(df)  # plain candles: price panel only, the others say so
    assert [t.get_text() for t in bare.axes[1].texts] == ["no RSI column"]
    with pytest.raises(UserError, match="open_time index and a close column"):
        plots.preview_figure(df.reset_index())


def test_price_volume_figure(tmp_path, ta_frame):
    df = ta_frame
    fig = plots.price_volume_figure(df, title="x")
    assert [ax.get_ylabel() for ax in fig.axes] == ["close", "volume"]
    (bars,) = fig.axes[1].collections
    assert len(bars.get_paths()) == len(df)
    np.testing.assert_allclose([p.vertices[1, 1] for p in bars.get_paths()], df["volume"])
    up = (df["close"] >= df["open"]).to_numpy()
    colors = bars.get_facecolor()[:, :3]
    assert (np.all(colors == matplotlib.colors.to_rgb(plots.UP), axis=1) == up).all()
    _png_ok(plots.save_png(fig, tmp_path / "pv.png"))
    with pytest.raises(UserError, match=r"missing columns \['volume'\]"):
        plots.price_volume_figure(df.drop(columns="volume"))


def test_select_window(ta_frame):
    w = plots.select_window(ta_frame, start="2024-01-05", end="2024-01-06")
    assert w.index[0] == pd.Timestamp("2024-01-05", tz="UTC") and w.index[-1] == pd.Timestamp("2024-01-06 23:00",
                                                                                                   tz="UTC")
    assert len(plots.select_window(ta_frame, start="2024-01-05 12:00", rows=5)) == 5
    assert plots.select_window(ta_frame, rows=10).index[-1] == ta_frame.index[-1]
    with pytest.raises(UserError, match="no candles between 2030-01-01 and the end -- pick a range inside"):
        plots.select_window(ta_frame, start="2030-01-01")
    with pytest.raises(UserError, match="cannot read 'soon' as a date"):
        plots.select_window(ta_frame, end="soon")
    with pytest.raises(UserError, match="rows must be a positive number"):
        plots.select_window(ta_frame, rows=0)


def test_has_display(monkeypatch):
    for k in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert plots.has_display() is False
    monkeypatch.setenv("DISPLAY", ":0")
    assert plots.has_display() is True
    monkeypatch.setenv("MPLBACKEND", "Agg")
    assert plots.has_display() is False


def test_cli_saves_png_under_reports_without_display(ta_file, settings_env, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    shown = []
    monkeypatch.setattr("matplotlib.pyplot.show", lambda *a, **k: shown.append(1))
    assert run(preview.main, ["--symbol", "ethusdc", "--interval", "1h", "--days", "20", "--rows", "200"]) == 0
    out = report_path(Dataset("ETHUSDC", "1h", 20), "preview", "png")
    assert out == settings_env.reports_dir / "ethusdc_1h_20d_preview.png"
    assert f"saved {out}" in capsys.readouterr().out and not shown
    _png_ok(out)


def test_cli_shows_when_a_display_exists(ta_file, monkeypatch):
    shown = []
    monkeypatch.setattr(plots, "has_display", lambda: True)
    monkeypatch.setattr("matplotlib.pyplot.show", lambda *a, **k: shown.append(1))
    assert run(preview.main, ["--symbol", "ETHUSDC", "--interval", "1h", "--days", "20"]) == 0
    assert shown == [1]
    assert run(preview.main, ["--symbol", "ETHUSDC", "--interval", "1h", "--days", "20", "--no-show"]) == 0
    assert shown == [1]


def test_cli_missing_file_names_the_s2_command(settings_env, capsys):
    assert run(preview.main, ["--symbol", "ETHUSDC", "--interval", "1h", "--days", "365"]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("create it first with: python S2/indicators.py --symbol ETHUSDC --interval 1h "
                                "--days 365") and err.count("\n") == 1
    assert not report_path(Dataset("ETHUSDC", "1h", 365), "preview", "png").exists()


def test_script_runs_headless(ta_file, settings_env):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    env.update(DATA_DIR=str(settings_env.data_dir), REPORTS_DIR=str(settings_env.reports_dir))
    proc = subprocess.run([sys.executable, "S2/preview.py", "--symbol", "ETHUSDC", "--interval", "1h", "--days",
                           "20", "--start", "2024-01-10"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    _png_ok(report_path(Dataset("ETHUSDC", "1h", 20), "preview", "png"))


def test_module_doctests():
    import doctest

    res = doctest.testmod(plots)
    assert res.attempted > 0 and res.failed == 0
