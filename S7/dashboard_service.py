"""The dashboard's **Service** view: the live state of a running ``python S8/service.py`` through its
control API (``GET /status`` with ``CONTROL_API_TOKEN``), and pause / resume / panic buttons behind a
confirmation.

It talks HTTP only (S7 never imports S8). Nothing is shown when no token is configured; a service
that does not answer is one caption in the sidebar.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

TIMEOUT = 3.0
ACTIONS = {"pause": "Pause new entries", "resume": "Resume entries", "panic": "PANIC: flatten everything"}


def control_url(settings) -> str:
    host = settings.control_api_host
    return f"http://{'[' + host + ']' if ':' in host else host}:{settings.control_api_port}"


def _headers(settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.control_api_token.get_secret_value()}"}


def fetch_status(settings) -> tuple[dict | None, str | None]:
    """``(status, None)`` from a running service, or ``(None, why not)``."""
    import httpx

    if settings.control_api_token is None:
        return None, "CONTROL_API_TOKEN is not set"
    try:
        r = httpx.get(control_url(settings) + "/status", headers=_headers(settings), timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        return None, f"no service at {control_url(settings)} ({type(exc).__name__})"
    if r.status_code == 401:
        return None, f"the service at {control_url(settings)} refused CONTROL_API_TOKEN (401)"
    if r.status_code != 200:
        return None, f"the service at {control_url(settings)} answered HTTP {r.status_code}"
    return r.json(), None


def send(settings, action: str, market: str | None = None) -> tuple[bool, Any]:
    """POST ``/pause``, ``/resume`` or ``/panic``; ``(ok, answer or error text)``."""
    import httpx

    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    body = {"market": market} if market and action != "panic" else None
    try:
        r = httpx.post(f"{control_url(settings)}/{action}", headers=_headers(settings), json=body,
                       timeout=120 if action == "panic" else TIMEOUT)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    try:
        answer = r.json()
    except ValueError:
        answer = r.text
    return r.status_code == 200, answer


def workers_frame(status: dict) -> pd.DataFrame:
    cols = ["name", "kind", "state", "pid", "restarts", "heartbeat_age_s", "last_exit"]
    return pd.DataFrame([{c: w.get(c) for c in cols} for w in status.get("workers", [])], columns=cols)


def markets_frame(status: dict) -> pd.DataFrame:
    rows = []
    for m in status.get("markets", []):
        ks = m.get("kill_switch") or {}
        pos = m.get("position") or {}
        rows.append({"market": m["market"], "interval": m.get("interval"), "mode": m.get("mode"),
                     "last closed candle": m.get("last_closed_candle"), "lag s": m.get("lag_s"),
                     "position": pos.get("qty"), "open orders": m.get("open_orders"), "equity": m.get("equity"),
                     "paused": m.get("paused"),
                     "kill-switch": f"TRIPPED ({ks.get('reason')})" if ks.get("tripped") else "ok"})
    return pd.DataFrame(rows)


def service_section(settings=None) -> bool:
    """Draw the view when a service answers; returns whether it did."""
    import streamlit as st

    from S1.settings import get_settings

    settings = settings or get_settings()
    if settings.control_api_token is None:
        return False
    status, why = fetch_status(settings)
    if status is None:
        st.sidebar.caption(f"service: {why}")
        return False
    st.header("Service", anchor="service")
    svc = status.get("service", {})
    workers, markets = workers_frame(status), markets_frame(status)
    c = st.columns(4)
    c[0].metric("Workers running", f"{int((workers['state'] == 'running').sum())} of {len(workers)}")
    c[1].metric("Restarts", f"{int(workers['restarts'].fillna(0).sum())}")
    c[2].metric("Markets paused", f"{int(markets['paused'].sum()) if len(markets) else 0}")
    tripped = int(markets["kill-switch"].str.startswith("TRIPPED").sum()) if len(markets) else 0
    c[3].metric("Kill-switches tripped", f"{tripped}")
    st.caption(f"{control_url(settings)} · up {svc.get('uptime_s', 0):,.0f} s"
               + (" · OFFLINE (simulated market)" if svc.get("offline") else ""))
    st.dataframe(markets, hide_index=True, width="stretch", key="service-markets")
    st.dataframe(workers, hide_index=True, width="stretch", key="service-workers")

    with st.expander("Controls (pause / resume / panic)"):
        names = ["all markets"] + [m for m in markets["market"]] if len(markets) else ["all markets"]
        action = st.radio("Action", list(ACTIONS), format_func=ACTIONS.get, key="svc-action", horizontal=True)
        target = st.selectbox("Market", names, key="svc-market", disabled=action == "panic")
        if action == "panic":
            st.warning("Panic cancels every open order, sells every position at market and trips every "
                       "kill-switch (reason `panic`); trading stays stopped until the kill-switches are reset.")
            confirmed = st.text_input("Type PANIC to confirm", key="svc-confirm-text") == "PANIC"
        else:
            confirmed = st.checkbox(f"I confirm: {ACTIONS[action].lower()} on {target}", key="svc-confirm")
        if st.button("Send", key="svc-send", disabled=not confirmed, type="primary" if action == "panic" else
                     "secondary"):
            ok, answer = send(settings, action, None if target == "all markets" else target)
            (st.success if ok else st.error)(f"{action}: {'done' if ok else 'failed'}")
            st.json(answer)
    return True


__all__ = ["ACTIONS", "control_url", "fetch_status", "markets_frame", "send", "service_section", "workers_frame"]
