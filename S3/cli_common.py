"""Argument helpers shared by the S3 scripts (kept here so the scripts stay thin)."""

from __future__ import annotations

import logging

from S1.cli import ArgumentParser, add_common_args


def parser(description: str) -> ArgumentParser:
    p = ArgumentParser(description=description)
    p.add_argument("--config", default=None, help="S3 YAML config (default S3/sentiment.yaml)")
    add_common_args(p)
    return p


def quiet_http_logs() -> None:
    """The openai client's transport logs one INFO line per request: keep them at WARNING."""
    for name in ("httpx", "httpx2", "openai", "openai._base_client", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
