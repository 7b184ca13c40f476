"""A 24/7 service: supervised streamer and executors, a control API with a panic button, Prometheus metrics.

    python S8/service.py --config S8/service.yaml                                 # the markets in the file
    python S8/service.py --config S8/service.yaml --offline --offline-candle-seconds 1   # no keys, no internet

Needs ``CONTROL_API_TOKEN`` (>= 24 characters) in .env. The control API listens on
``CONTROL_API_HOST:CONTROL_API_PORT`` (127.0.0.1:8008): ``/status``, ``/pause``, ``/resume``, ``/panic``,
``/reload``, ``/stop`` (token), ``/metrics`` (Prometheus), ``/docs``. SIGTERM / Ctrl-C: executors finish
the order in flight and persist, the service exits 0. See S8/README.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
from pathlib import Path
from typing import Sequence

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.errors import UserError

log = logging.getLogger("S8.service")
DEFAULT_CONFIG = Path(__file__).resolve().parent / "service.yaml"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python S8/service.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="service YAML (default S8/service.yaml)")
    p.add_argument("--offline", action="store_true",
                   help="run against the project's local exchange and simulated market (no keys, no internet); "
                        "every executor trades on that local test exchange")
    p.add_argument("--offline-candle-seconds", type=float, default=60.0, metavar="N",
                   help="offline: a 1m candle closes every N wall seconds (default 60; tests use 1)")
    add_common_args(p)
    return p


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                        "is another service running? set CONTROL_API_PORT (and CONTROL_API_HOST) in .env") from None
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


async def serve(cfg, settings, *, token: str, offline_env: dict[str, str] | None = None,
                market_env: dict[str, dict[str, str]] | None = None) -> int:
    import uvicorn

    from S8.api import build_app
    from S8.runtime import Service

    service = Service(cfg, settings, offline_env=offline_env, market_env=market_env)
    service.check()
    sock = _bind(settings.control_api_host, settings.control_api_port)

    class _Server(uvicorn.Server):
        def capture_signals(self):  # the service owns SIGTERM / SIGINT
            import contextlib

            return contextlib.nullcontext()

    server = _Server(uvicorn.Config(build_app(service, token), log_level="warning", lifespan="off",
                                    access_log=False, timeout_graceful_shutdown=2))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, service.request_stop, sig.name)
        except (NotImplementedError, RuntimeError):
            pass
    api = loop.create_task(server.serve(sockets=[sock]), name="control-api")
    host, port = sock.getsockname()[:2]
    print(f"S8 service: {len(cfg.markets)} market(s), control API on http://{host}:{port} (/status /pause /resume "
          f"/panic /reload /stop, docs /docs, metrics /metrics){' -- OFFLINE (simulated market)' if offline_env else ''}",
          flush=True)
    try:
        await service.run()
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(api, 3)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001
            api.cancel()
        sock.close()
    print(f"S8 service stopped ({service.stopped_by}): "
          + ", ".join(f"{w.name} {w.restarts} restart(s)" for w in service.sup.workers.values()), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from S1.settings import Settings, get_settings
    from S8.api import check_token
    from S8.config import load_config

    settings = get_settings()
    token = check_token(settings.control_api_token.get_secret_value() if settings.control_api_token else None)
    cfg = load_config(args.config)
    if not args.offline:
        return asyncio.run(serve(cfg, settings, token=token))
    if args.offline_candle_seconds <= 0:
        raise UserError("--offline-candle-seconds must be positive", "e.g. --offline-candle-seconds 1")
    from S7.offline import offline_venue

    # the local exchange accepts the testnet keys of .env when there are some (tests read its account
    # with them), else throw-away ones; either way they never leave this machine
    key, secret = settings.binance_testnet_api_key, settings.binance_testnet_api_secret
    venue = offline_venue(cfg.symbols, candle_seconds=args.offline_candle_seconds,
                          api_key=key.get_secret_value() if key else "offline-" + secrets.token_hex(12),
                          api_secret=secret.get_secret_value() if secret else secrets.token_hex(24))
    try:
        os.environ.update(venue.env)       # the service's own clients (panic) use the same venue
        os.environ.pop("BINANCE_TESTNET_WS_API_URL", None)
        settings = Settings()
        log.warning("OFFLINE: simulated market at %s (a 1m candle every %gs), a local test exchange per market (%s)",
                    venue.env["BINANCE_API_URL"], args.offline_candle_seconds,
                    ", ".join(f"{s} {e['BINANCE_TESTNET_API_URL']}" for s, e in venue.market_env.items()))
        return asyncio.run(serve(cfg, settings, token=token, offline_env=venue.env, market_env=venue.market_env))
    finally:
        venue.stop()


if __name__ == "__main__":
    main_entry(main)
