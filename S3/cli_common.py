"""Argument helpers shared by the S3 scripts (kept here so the scripts stay thin)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from S1.cli import ArgumentParser, add_common_args, examples_from_doc


def parser(description: str) -> ArgumentParser:
    """The S3 script's parser, named and exemplified after the calling script (``python S3/news.py``,
    the command lines of its docstring)."""
    caller = sys._getframe(1).f_globals
    name = Path(caller.get("__file__") or "script.py").name
    p = ArgumentParser(prog=f"python S3/{name}", description=description,
                       examples=examples_from_doc(caller.get("__doc__")))
    p.add_argument("--config", default=None, help="S3 YAML config (default S3/sentiment.yaml)")
    add_common_args(p)
    return p


def quiet_http_logs() -> None:
    """The openai client's transport logs one INFO line per request: keep them at WARNING."""
    for name in ("httpx", "httpx2", "openai", "openai._base_client", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
