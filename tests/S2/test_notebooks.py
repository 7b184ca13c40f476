"""notebooks/visualize_price_volume.ipynb and notebooks/S2_indicators.ipynb run top to
bottom (nbclient, a real kernel) on a tmp DATA_DIR holding a small simulated
dataset; their parameter cells are overridden the way papermill would."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from queue import Empty
from time import monotonic

import nbformat
import pytest
from nbclient import NotebookClient

from S1.datasets import dataset_path, write_parquet
from S1.simulated import simulate_candles
from S2.ta import add_indicators

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
MINE = ("visualize_price_volume.ipynb", "S2_indicators.ipynb")
MINE = ("visualize_price_volume.ipynb", "S2_indicators.ipynb")


@pytest.fixture(scope="module")
def candles():
    return simulate_candles("ETHUSDC", "1h", "2024-01-01", "2024-01-31")  # 720 candles


def _chunked(channel, step: float = 0.5) -> None:
    """Make ``channel.get_msg(timeout)`` poll in short steps.

    Under load, the asyncio poll of a jupyter_client channel sometimes misses the
    wake-up of a message that has already arrived (the socket's edge-triggered fd;
    see ipython/ipykernel#1529 for the kernel-side twin); pyzmq only notices it when
    the poll times out -- after the whole 120 s cell timeout, measured here as
    2-minute stalls in about one run in three on a busy 2-core machine. Polling in
    0.5 s steps bounds that stall to 0.5 s and changes nothing else.
    """
    original = channel.get_msg

    async def get_msg(timeout=None):
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            left = step if deadline is None else max(0.0, min(step, deadline - monotonic()))
            try:
                return await original(timeout=left)
            except Empty:
                if deadline is not None and monotonic() >= deadline:
                    raise

    channel.get_msg = get_msg


class Client(NotebookClient):
    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        _chunked(kc.shell_channel)
        _chunked(kc.iopub_channel)
        return kc


def execute(name: str, **params) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "one cell tagged 'parameters'"
    if params:
        cells[0].source += "\n# injected by the test\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    Client(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def outputs(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def text_of(nb) -> str:
    parts = []
    for o in outputs(nb):
        parts.append(o.get("text", "") if o["output_type"] == "stream" else o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def pngs(nb) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs(nb))


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
    write_parquet(candles, dataset_path("ETHUSDC", "1h", 30), metadata={"simulated": True})
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
    write_parquet(candles, dataset_path("ETHUSDC", "1h", 30), metadata={"simulated": True})
    nb = execute("S2_indicators.ipynb", ROWS=200)
    text = text_of(nb)
    assert "ethusdc_1h_30d_ta.parquet does not exist: computed the indicators" in text
    assert "simulated market data" in text and "720 candles" in text
    assert "no streamer database at" in text
    assert pngs(nb) >= 1
    assert not dataset_path("ETHUSDC", "1h", 30, "ta").exists()  # the notebook writes nothing


def test_indicators_notebook_reads_the_ta_file(settings_env, candles):
    ta = add_indicators(candles)
    write_parquet(ta, dataset_path("ETHUSDC", "1h", 30, "ta"), metadata={"simulated": False})
    nb = execute("S2_indicators.ipynb", SYMBOL="ETHUSDC", INTERVAL="1h", DAYS=30, ROWS=100)
    text = text_of(nb)
    assert "read ethusdc_1h_30d_ta.parquet" in text and "NOTE: simulated" not in text
    assert "sma20" in text and "MACD_8_21_5" in text  # the other-lengths cell ran on the file's frame
    assert pngs(nb) >= 1
