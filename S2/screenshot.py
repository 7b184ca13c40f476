"""Screenshot any Streamlit app in a real headless browser (Debian ``chromium``).

    python S2/screenshot.py S2/preview_streamlit.py --out reports/preview_app.png \\
        -- --symbol ETHUSDC --interval 1h --days 365

Starts ``streamlit run <app> -- <app args>`` headless on a free 127.0.0.1 port,
waits for its health check, opens the page in ``chromium --headless``, waits
until the app has finished running and its page has stopped changing (Plotly
charts drawn), saves a PNG and stops Streamlit and the browser. Any app works
(the S7 dashboard reuses it); the default output is ``reports/<app name>.png``.

The page is checked as well: an exception box or an error alert in the app, a
lost connection, or a page that never settles fails the run (exit 3) -- a
screenshot of an error is never reported as a success.

Why the DevTools protocol and not ``chromium --screenshot --virtual-time-budget``:
a Streamlit page is drawn from websocket messages, and virtual time does not wait
for them -- measured here, the one-shot ``--screenshot`` run returns after ~2 s of
real time whatever the budget, showing an empty page with "Running...". So the
same Debian chromium with the same headless flags is driven over
``--remote-debugging-port`` (a few CDP calls with the ``websockets`` client) and
polled until the app is idle.

Exit codes: 0 saved, 2 bad input (no app, no chromium), 3 the app or the browser failed.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.errors import NetworkError, UserError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--disable-dev-shm-usage", "--mute-audio")

#: Evaluated in the page: the state that decides "rendered", "still running" or "failed".
PAGE_STATE_JS = r"""(() => {
  const q = s => document.querySelector(s);
  const all = s => [...document.querySelectorAll(s)];
  const text = s => all(s).map(e => e.innerText.trim()).filter(Boolean).join(' | ');
  return JSON.stringify({
    app: !!q('[data-testid="stApp"]'),
    running: !!q('[data-testid="stStatusWidgetRunningIcon"]'),
    skeleton: !!q('[data-testid="stSkeleton"]') || !!q('[data-testid="stAppSkeleton"]'),
    elements: all('[data-testid="stElementContainer"]').length,
    plotly: all('.js-plotly-plot').length,
    plotly_drawn: all('.js-plotly-plot .main-svg').length,
    exception: text('[data-testid="stException"]'),
    error: text('[data-testid="stAlertContentError"]'),
    connection: text('[data-testid="stConnectionStatus"]'),
    height: Math.max(document.documentElement.scrollHeight,
                     ...all('[data-testid="stMain"], [data-testid="stAppViewContainer"], section.main')
                        .map(e => e.scrollHeight)),
    title: ((q('h1') || {}).innerText || '').trim(),
    // layout boxes: a sidebar or page still sliding (CSS transition) is not settled
    boxes: all('[data-testid="stSidebar"], [data-testid="stMain"]').map(e => {
      const r = e.getBoundingClientRect();
      return [Math.round(r.x), Math.round(r.y), Math.round(r.width), Math.round(r.height)];
    }),
  });
})()"""


@dataclass(frozen=True)
class Shot:
    path: Path
    url: str
    seconds: float
    state: dict = field(default_factory=dict)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_chromium(path: str | None = None) -> str:
    """The browser executable (``--chromium``, ``$CHROMIUM`` or /usr/bin/chromium)."""
    exe = path or os.environ.get("CHROMIUM") or CHROMIUM
    if Path(exe).is_file() and os.access(exe, os.X_OK):
        return exe
    found = shutil.which(exe)
    if not found:
        raise UserError(f"no headless browser at {exe}",
                        "install it (Debian/Ubuntu: apt-get install -y chromium) or pass --chromium PATH")
    return found


def _stop(proc: subprocess.Popen | None) -> None:
    """Stop a process group we started (its own session), gently first. The group is
    signalled even when its leader has exited (browser helpers may still run)."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # leader gone: give the rest of the group a moment, then check again
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.05)
    if proc.poll() is None:
        proc.wait(timeout=10)


# -------------------------------------------------------------------------- streamlit
def start_streamlit(app: Path, app_args: Sequence[str], *, log_path: Path, timeout: float,
                    env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """``streamlit run app -- app_args`` on a free local port; returns once healthy."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--global.developmentMode", "false"]
    if app_args:
        cmd += ["--", *app_args]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise NetworkError(f"streamlit exited with code {proc.returncode} before serving the app "
                               f"({tail[0]})", "run the same `streamlit run` by hand to see why")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        time.sleep(0.2)
    _stop(proc)
    raise NetworkError(f"streamlit did not answer on {url} within {timeout:.0f} s",
                       "raise --start-timeout or check that the app starts by hand")


# ---------------------------------------------------------------------------- browser
class Browser:
    """Headless chromium and a minimal DevTools-protocol session on one page."""

    def __init__(self, exe: str, profile: Path, *, width: int, height: int, timeout: float = 30.0):
        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--remote-debugging-address=127.0.0.1", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True)
        self._ids = itertools.count(1)
        self._stack = contextlib.ExitStack()
        self.ws = None
        try:
            port_file = profile / "DevToolsActivePort"
            deadline = time.monotonic() + timeout
            while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise NetworkError(f"chromium did not start (exit {self.proc.poll()})",
                                       f"check that it runs: {exe} --headless --no-sandbox --version")
                time.sleep(0.1)
            port, path = port_file.read_text().splitlines()[:2]
            from websockets.sync.client import connect

            self.ws = self._stack.enter_context(
                connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=timeout))
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def call(self, method: str, *, session: bool = False, timeout: float = 60.0, **params: Any) -> dict:
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NetworkError(f"chromium did not answer {method} in {timeout:.0f} s", "raise --wait")
            reply = json.loads(self.ws.recv(timeout=left))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise NetworkError(f"chromium: {method} failed: {reply['error'].get('message')}",
                                       "check the URL and the browser")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return res.get("result", {}).get("value")

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.call("Browser.close", timeout=5)
            except Exception:
                pass
        try:
            self._stack.close()
        except Exception:
            pass
        _stop(self.proc)


def wait_rendered(browser: Browser, *, timeout: float, settle: float = 1.0, poll: float = 0.2) -> dict:
    """Poll the page until the app is idle and unchanged for ``settle`` seconds;
    raise :class:`NetworkError` if it shows an error or never settles."""
    deadline = time.monotonic() + timeout
    last, stable_since, state = None, None, {}
    while time.monotonic() < deadline:
        state = json.loads(browser.evaluate(PAGE_STATE_JS) or "{}")
        if state.get("exception") or state.get("error"):
            shown = (state.get("exception") or state.get("error"))[:300]
            raise NetworkError(f"the app shows an error: {shown}",
                               "open the app by hand (streamlit run ...) and fix it")
        ready = (state.get("app") and not state.get("running") and not state.get("skeleton")
                 and state.get("elements", 0) > 0 and state.get("plotly_drawn", 0) >= state.get("plotly", 0))
        if ready and state == last:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= settle:
                return state
        else:
            stable_since = None
        last = state
        time.sleep(poll)
    if state.get("connection"):
        raise NetworkError(f"the page lost its connection to streamlit ({state['connection'][:200]})",
                           "check the streamlit log")
    raise NetworkError(f"the app did not finish rendering in {timeout:.0f} s (last state {state})",
                       "raise --wait or check the app by hand")


def screenshot(app: Path | str, out: Path | str, *, app_args: Sequence[str] = (), width: int = 1400,
               height: int = 2000, wait: float = 60.0, start_timeout: float = 60.0,
               chromium: str | None = None, full_page: bool = False, env: dict | None = None) -> Shot:
    """Serve ``app`` with Streamlit, screenshot it in headless Chromium once rendered,
    stop both. Raises :class:`UserError` (bad input) / :class:`NetworkError` (failure);
    ``out`` is only written (atomically) on success."""
    from S1.datasets import atomic_write_bytes

    app = Path(app)
    if not app.is_file():
        raise UserError(f"app {app} does not exist",
                        "pass the path of a Streamlit script, e.g. S2/preview_streamlit.py")
    exe = find_chromium(chromium)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="toolkit-shot-") as tmp:
        tmp = Path(tmp)
        server = browser = None
        try:
            server, url = start_streamlit(app, app_args, log_path=tmp / "streamlit.log",
                                          timeout=start_timeout, env=env)
            browser = Browser(exe, tmp / "profile", width=width, height=height)
            browser.call("Page.navigate", session=True, url=url)
            state = wait_rendered(browser, timeout=wait)
            if full_page and state["height"] > height:
                # Streamlit scrolls inside its own container: grow the window to the content
                # instead, and let the page settle again at that size
                browser.call("Emulation.setDeviceMetricsOverride", session=True, width=width,
                             height=int(state["height"]), deviceScaleFactor=1, mobile=False)
                state = wait_rendered(browser, timeout=wait)
            shot = browser.call("Page.captureScreenshot", session=True, format="png")
            data = base64.b64decode(shot["data"])
        finally:
            if browser is not None:
                browser.close()
            _stop(server)
    path = atomic_write_bytes(Path(out), data)
    return Shot(path, url, time.perf_counter() - t0, state)


# ------------------------------------------------------------------------------ CLI
def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="S2/screenshot.py", description=__doc__.split("\n\n")[0],
                       epilog="Arguments after -- go to the app.")
    p.add_argument("app", help="the Streamlit script, e.g. S2/preview_streamlit.py")
    p.add_argument("--out", help="PNG to write (default reports/<app name>.png)")
    p.add_argument("--window-size", default="1400,2000", help="browser WIDTH,HEIGHT in px (1400,2000)")
    p.add_argument("--full-page", action="store_true",
                   help="grow the window to the whole page (WIDTH stays) instead of cutting at HEIGHT")
    p.add_argument("--wait", type=float, default=60.0, help="most seconds for the page to render (60)")
    p.add_argument("--start-timeout", type=float, default=60.0, help="most seconds for streamlit to start")
    p.add_argument("--chromium", help=f"browser executable (default $CHROMIUM or {CHROMIUM})")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    app_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, app_args = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    try:
        width, height = (int(v) for v in args.window_size.lower().replace("x", ",").split(","))
        if not (200 <= width <= 8000 and 200 <= height <= 16000):
            raise ValueError
    except ValueError:
        raise UserError(f"--window-size {args.window_size!r} is not WIDTH,HEIGHT in pixels",
                        "e.g. --window-size 1400,2000") from None
    if args.out:
        out = Path(args.out)
    else:
        from S1.datasets import reports_dir

        out = reports_dir() / f"{Path(args.app).stem}.png"
    shot = screenshot(args.app, out, app_args=app_args, width=width, height=height, wait=args.wait,
                      start_timeout=args.start_timeout, chromium=args.chromium, full_page=args.full_page)
    charts = shot.state.get("plotly", 0)
    size = f"{width}x{height}"
    if args.full_page:
        size = f"{width}x{max(height, int(shot.state.get('height', 0)))} full page"
    print(f"saved {shot.path} ({size}, {charts} chart(s), {shot.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    main_entry(main)
