"""notebooks/visualize_price_volume.ipynb and notebooks/S2_indicators.ipynb run top to
bottom (nbclient, a real kernel) on a tmp DATA_DIR holding a small simulated
dataset; their parameter cells are overridden the way papermill would."""

from __future__ import annotations

import ast
import json
import re

import nbformat
import pytest

from S1.datasets import Dataset, dataset_path, write_parquet
from S1.local.simulated import simulate_candles
from S2.ta import add_indicators
from tests.notebook_runner import NOTEBOOKS, execute, outputs, pngs, text_of

MINE = ("visualize_price_volume.ipynb", "S2_indicators.ipynb")


@pytest.fixture(scope="module")
def candles():
    return simulate_candles("ETHUSDC", "1h", "2024-01-01", "2024-01-31")  # 720 candles


def test_notebooks_only_import_sprint_modules():
    for name in MINE:
        path = NOTEBOOKS / name
        nb = nbformat.read(path, as_version=4)
        src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        for mod in re.findall(r"^\s*(?:from|import)\s+([\w.]+)", src, flags=re.M):
            top = mod.split(".")[0]
            assert top in {"S1", "S2", "pandas", "ipywidgets", "IPython"}, f"{path.name} imports {mod}"
        assert "read_parquet(" not in src and "/data/" not in src  # paths come from settings / S1.datasets


def test_price_volume_notebook_runs_with_a_date_range(settings_env, candles):
    write_parquet(candles, dataset_path(Dataset("ETHUSDC", "1h", 30)), metadata={"simulated": True})
    nb = execute("visualize_price_volume.ipynb", DATASET="ethusdc_1h_30d.parquet", START="2024-01-10",
                 END="2024-01-12")
    text = text_of(nb)
    assert f"data directory: {settings_env.data_dir}" in text and "SIMULATED market data" in text
    summary = ast.literal_eval(next(o["data"]["text/plain"] for o in outputs(nb)
                                    if o.get("data", {}).get("text/plain", "").startswith("{'first close'")))
    window = candles.loc["2024-01-10":"2024-01-12"]
    assert summary["candles"] == len(window) == 72
    assert summary["last close"] == round(float(window["close"].iloc[-1]), 4)
    assert pngs(nb) >= 1  # the static figure
    # the widgets ran too: their figure lives in the Output widget's stored state
    assert "application/vnd.jupyter.widget-view+json" in nb.cells[-1].outputs[0]["data"]
    assert "image/png" in json.dumps(nb.metadata["widgets"])


def test_indicators_notebook_computes_in_memory_without_a_ta_file(settings_env, candles):
    write_parquet(candles, dataset_path(Dataset("ETHUSDC", "1h", 30)), metadata={"simulated": True})
    nb = execute("S2_indicators.ipynb", ROWS=200)
    text = text_of(nb)
    assert "ethusdc_1h_30d_ta.parquet does not exist: computed the indicators" in text
    assert "simulated market data" in text and "720 candles" in text
    assert "no streamer database at" in text
    assert pngs(nb) >= 1
    assert not dataset_path(Dataset("ETHUSDC", "1h", 30), "ta").exists()  # the notebook writes nothing


def test_indicators_notebook_reads_the_ta_file(settings_env, candles):
    ta = add_indicators(candles)
    write_parquet(ta, dataset_path(Dataset("ETHUSDC", "1h", 30), "ta"), metadata={"simulated": False})
    nb = execute("S2_indicators.ipynb", SYMBOL="ETHUSDC", INTERVAL="1h", DAYS=30, ROWS=100)
    text = text_of(nb)
    assert "read ethusdc_1h_30d_ta.parquet" in text and "NOTE: simulated" not in text
    assert "sma20" in text and "MACD_8_21_5" in text  # the other-lengths cell ran on the file's frame
    assert pngs(nb) >= 1
