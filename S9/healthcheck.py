"""Is the S8 service healthy? ``GET /status`` on its control API with the Bearer token.

    python -m S9.healthcheck                       # CONTROL_API_HOST/PORT/TOKEN from .env / environment
    python -m S9.healthcheck --url http://127.0.0.1:8008/status

The Dockerfile's ``HEALTHCHECK`` runs this. Exit 0: the service answered 200 (and, when
the answer says so, is up); exit 1 with one line on stderr otherwise -- Docker's
convention (2 is reserved there, so even a missing token is 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request


def check(url: str, token: str | None, *, timeout: float = 5.0) -> tuple[bool, str]:
    """``(healthy, one-line reason)`` for the control API at ``url``."""
    if not token:
        return False, "CONTROL_API_TOKEN is not set (the control API refuses every /status without it)"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read(1_000_000)
            code = resp.status
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered HTTP {exc.code}" + (" (wrong token?)" if exc.code in (401, 403) else "")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"cannot reach {url} ({reason})"
    if code != 200:
        return False, f"{url} answered HTTP {code}"
    try:
        status = json.loads(body)
    except ValueError:
        return False, f"{url} did not answer JSON"
    if isinstance(status, dict) and status.get("up") is False:
        return False, f"{url} says the service is not up"
    return True, "ok"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m S9.healthcheck", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=None, help="default http://<CONTROL_API_HOST>:<CONTROL_API_PORT>/status")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    args = p.parse_args(argv)
    try:
        from S1.settings import get_settings

        s = get_settings()
        host = getattr(s, "control_api_host", "127.0.0.1")
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        url = args.url or f"http://{host}:{getattr(s, 'control_api_port', 8008)}/status"
        secret = getattr(s, "control_api_token", None)
        token = secret.get_secret_value() if secret is not None else None
        ok, why = check(url, token, timeout=args.timeout)
        if not ok:
            why = s.redact(why)
    except Exception as exc:  # noqa: BLE001 - a health check answers, it never crashes
        ok, why = False, f"{type(exc).__name__}: {exc}"
    if not ok:
        print(f"unhealthy: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
