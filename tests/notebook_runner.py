"""Run a notebook of ``notebooks/`` top to bottom in a real kernel (nbclient), its
parameter cell overridden the way papermill would, and read its outputs.

Shared by ``tests/S2/test_notebooks.py`` and ``tests/S5/test_notebook.py``. The kernel
inherits the test's environment, so a ``settings_env`` fixture (tmp ``DATA_DIR``) reaches it.
"""

from __future__ import annotations

from pathlib import Path
from queue import Empty
from time import monotonic

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


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
    """Execute ``notebooks/<name>`` (cwd = ``notebooks/``); ``params`` are appended to the
    one cell tagged ``parameters``."""
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
