"""What the control API's buttons do to one market, outside the executor: validate and snapshot its
rule/risk files (``/reload``), and flatten it at the exchange (``/panic``).

The panic runs while the market's executor is stopped (the service holds it), through the same venue
the executor uses -- :class:`S7.exchange_client.BinanceTradingClient` on the testnet / live, the
:class:`S7.simulator.SimulatedExchange` account file in a dry-run -- so nothing races an order in
flight; the restarted executor's reconciliation then sees the flat account.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from S1.datasets import executor_state_path, realtime_db_path, state_path
from S1.errors import UserError
from S1.settings import Settings
from S8.config import Market

log = logging.getLogger("S8.actions")

PANIC_REASON = "panic"


def service_dir(*, data_dir: Path | None = None) -> Path:
    """``data/state/service/``: control/status files, kill-switches, rule snapshots of the service."""
    return state_path("service", data_dir=data_dir)


def mode_tag(mode: str) -> str:
    return {"dry-run": "dryrun"}.get(mode, mode)


def market_paths(m: Market, *, interval_db: Path | None = None, data_dir: Path | None = None) -> dict[str, Path]:
    d = service_dir(data_dir=data_dir)
    tag = mode_tag(m.mode)
    state = executor_state_path(tag, m.symbol, m.interval, data_dir=data_dir)
    return {"state": state, "sim": state.with_suffix(".sim.json"),
            "kill_switch": d / f"kill_switch_{tag}_{m.key}.json",
            "rules": d / "rules" / f"{m.key}.rules.yaml", "risk": d / "rules" / f"{m.key}.risk.yaml",
            "db": interval_db or realtime_db_path(m.symbol, m.interval, data_dir=data_dir)}


# ---------------------------------------------------------------------- reload
def validate_market(m: Market) -> str:
    """Load the market's rules (S4, against the columns the executor computes) and risk file (S6)
    exactly as the executor will; raises :class:`UserError` with the validation message. Returns
    a short fingerprint of the pair."""
    from S7.session import load_strategy

    if not m.rules.exists():
        raise UserError(f"{m.name}: rule file {m.rules} does not exist", "fix the market's rules path")
    ns = SimpleNamespace(rules=m.rules, risk_config=m.risk_config, indicators_config=None, interval=m.interval,
                         symbol=m.symbol)
    try:
        _, _, _, _, tag = load_strategy(ns)
    except UserError as exc:
        raise UserError(f"{m.name}: {exc.problem}", exc.fix) from None
    risk = m.risk_config.read_bytes() if m.risk_config else b""
    return hashlib.sha256(tag.encode() + risk).hexdigest()[:12]


def snapshot(m: Market, paths: dict[str, Path]) -> None:
    """Copy the validated files where the executor reads them: a later bad edit of the originals
    never reaches a restarting executor (the old rules stay active until a reload succeeds)."""
    paths["rules"].parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(m.rules, paths["rules"])
    if m.risk_config is not None:
        shutil.copyfile(m.risk_config, paths["risk"])


# ----------------------------------------------------------------------- panic
def _last_price(db: Path, m: Market) -> tuple[float, int] | None:
    import sqlite3

    if not db.exists():
        return None
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        row = con.execute("SELECT close, close_time FROM kline WHERE symbol = ? AND interval = ? "
                          "ORDER BY open_time DESC LIMIT 1", (m.symbol, m.interval)).fetchone()
    finally:
        con.close()
    return (float(row[0]), int(row[1])) if row else None


async def _open_venue(m: Market, paths: dict[str, Path], settings: Settings):
    if m.mode == "dry-run":
        from S7.session import dry_run_filters
        from S7.simulator import SimulatedExchange

        last = _last_price(paths["db"], m)
        filters, _ = await dry_run_filters(m.symbol, settings, file=None, price=last[0] if last else None)
        venue = SimulatedExchange(filters, state_file=paths["sim"])
        if last is not None:
            venue.on_price(last[0], last[1])
        return venue, filters
    from S6.filters import SymbolFilters
    from S7.exchange_client import BinanceTradingClient

    testnet = m.mode == "testnet"
    key = settings.binance_testnet_api_key if testnet else settings.binance_api_key
    secret = settings.binance_testnet_api_secret if testnet else settings.binance_api_secret
    if key is None or secret is None:
        raise UserError(f"{m.name}: no {m.mode} keys to reach the exchange", "set them in .env")
    url = settings.binance_testnet_api_url if testnet else settings.binance_api_url
    venue = BinanceTradingClient(base_url=url, api_key=key.get_secret_value(), api_secret=secret.get_secret_value(),
                                 timeout=settings.http_timeout, name=f"{m.mode} {url}")
    await venue.sync_time()
    return venue, SymbolFilters.from_symbol_info(await venue.symbol_info(m.symbol))


async def _close_venue(venue) -> None:
    close = getattr(venue, "close_connection", None) or getattr(venue, "close", None)
    if close is not None:
        await close()


async def flatten_market(m: Market, paths: dict[str, Path], settings: Settings, *, generation: int) -> dict[str, Any]:
    """Cancel the market's open orders and sell the strategy's position at market. Idempotent:
    a flat market with no open order does nothing."""
    from S7.store import ExecutorStore

    out: dict[str, Any] = {"market": m.symbol, "interval": m.interval, "mode": m.mode, "cancelled": [],
                           "sold": "0", "errors": []}
    venue, filters = await _open_venue(m, paths, settings)
    try:
        for o in await venue.open_orders(symbol=m.symbol):
            cid = o.get("clientOrderId")
            try:
                await venue.cancel_order(symbol=m.symbol, client_order_id=cid)
                out["cancelled"].append(cid)
            except Exception as exc:  # noqa: BLE001 -- an order that filled meanwhile: reported
                out["errors"].append(f"cancel {cid}: {exc}")
        tracked = dust = Decimal(0)
        if paths["state"].exists():
            store = ExecutorStore.open_readonly(paths["state"])
            try:
                pos = store.position(m.symbol)
                tracked, dust = pos.qty, pos.dust   # dust: the sub-lot remainders of earlier trips
            finally:
                store.close()
        free = Decimal(0)
        for b in (await venue.account()).get("balances", []):
            if b.get("asset") == filters.base_asset:
                free = Decimal(str(b.get("free", "0")))
        qty = filters.round_qty(min(tracked + dust, free), market=True)
        last = _last_price(paths["db"], m)
        price = last[0] if last else None
        notional_ok = filters.min_notional is None or price is None or qty * Decimal(str(price)) >= filters.min_notional
        if qty > 0 and (filters.min_qty is None or qty >= filters.min_qty) and (tracked > 0 or notional_ok):
            cid = f"s8-panic-{m.key}-{generation}"[:36]
            try:
                res = await _sell_booked(venue, m, paths, filters, qty, cid, last)
                out["sold"] = str(res.get("executedQty", qty))
                out["sell_order"] = cid
                _book_flat(m, paths)
            except Exception as exc:  # noqa: BLE001 -- reported; dust that the exchange refuses is not an error
                if tracked > 0:
                    out["errors"].append(f"sell {qty}: {exc}")
                else:
                    out["note"] = f"dust {qty} not sold ({exc})"
        elif tracked > 0:
            out["errors"].append(f"position {tracked} not sellable (free {free}, step {filters.step_size})")
        out["position_before"] = str(tracked)
    finally:
        await _close_venue(venue)
    return out


async def _sell_booked(venue, m: Market, paths: dict[str, Path], filters, qty: Decimal, cid: str,
                       last: tuple[float, int] | None) -> dict:
    """The panic's MARKET SELL through the executor's own order recording (:class:`S7.ledger.Ledger` on the
    market's store and ``data/orders.jsonl``): the intent (reason ``panic``), the exchange's answer, every fill
    (from the answer, else ``myTrades``) -- so the position is closed by its fills and the round trip is booked
    with its P&L (``round_trips`` reason ``panic``), as any exit of the executor. Returns the exchange's order."""
    from S1.datasets import orders_log_path
    from S7.exchange_client import submit_order
    from S7.ledger import Ledger
    from S7.order_log import OrderLog
    from S7.orders import INTENT, Fill, plain
    from S7.session import _min_tradable
    from S7.store import ExecutorStore

    paths["state"].parent.mkdir(parents=True, exist_ok=True)
    store = ExecutorStore(paths["state"])
    try:
        ledger = Ledger(store, OrderLog(orders_log_path(), mode=m.mode), symbol=m.symbol, interval=m.interval,
                        base_asset=filters.base_asset, quote_asset=filters.quote_asset,
                        min_tradable=_min_tradable(filters))
        q = f"{qty.normalize():f}"
        if store.get_order(cid) is None:
            store.insert_order(cid, symbol=m.symbol, interval=m.interval, side="SELL", type="MARKET", quantity=q,
                               price=None if last is None else plain(Decimal(repr(last[0]))), status=INTENT,
                               reason=PANIC_REASON, sends=1)
            ledger.log_event(store.get_order(cid), status=INTENT, event="intent")
        res = await submit_order(venue, symbol=m.symbol, side="SELL", order_type="MARKET", quantity=q,
                                 client_order_id=cid)
        if res.status != "accepted":
            err = res.error.message if res.error is not None else "; ".join(res.notes)
            store.update_order(cid, status="REJECTED" if res.status == "rejected" else "UNKNOWN", error=err)
            ledger.log_event(store.get_order(cid), status=store.get_order(cid)["status"], event=res.status, error=err)
            raise RuntimeError(err or res.status)
        order = res.order
        if m.mode == "dry-run" and last is not None:
            # the simulator fills a MARKET order at the next price (as the executor's next event would)
            venue.on_price(last[0], last[1] + 1)
            order = await venue.get_order(symbol=m.symbol, client_order_id=cid) or order
        state, _ = ledger.order_response(order, event="accepted")
        booked = sum((Decimal(f["qty"]) for f in store.fills(m.symbol) if f["client_order_id"] == cid), Decimal(0))
        if state.executed_qty > booked:      # a lookup carries no fills: the trades of the order
            for t in await venue.my_trades(symbol=m.symbol, order_id=state.order_id):
                ledger.fill(Fill.from_my_trade(t, client_order_id=cid))
        for trip in ledger.take_closed():
            log.warning("panic: %s round trip booked, pnl %+.4f %s", m.symbol, trip["pnl"], filters.quote_asset)
        return order
    finally:
        store.close()


def _book_flat(m: Market, paths: dict[str, Path]) -> None:
    """The executor is stopped: whatever the panic's fills left open (less than one lot -- unsellable dust, as
    S7 keeps it, or more than the account held) is recorded as closed, not a position its restart would try to
    sell candle after candle."""
    from S7.store import ExecutorStore

    if not paths["state"].exists():
        return
    store = ExecutorStore(paths["state"])
    try:
        if store.position(m.symbol).is_open:
            store.clamp_position(m.symbol, Decimal(0))
    finally:
        store.close()


def trip_kill_switch(m: Market, paths: dict[str, Path]) -> str:
    """Trip the market's kill-switch with reason ``panic`` -- also over an earlier trip (drawdown, a timed
    pause ...): the panic is what a person must now look at. Idempotent."""
    from S6.config import RiskConfig
    from S6.killswitch import KillSwitch, _trip

    ks = KillSwitch(RiskConfig.load(m.risk_config), path=paths["kill_switch"])
    before = ks.state
    if before.tripped and before.reason == PANIC_REASON:
        return "already tripped"
    detail = "panic button (control API, by S8 service)" + (
        f"; was tripped: {before.reason}: {before.detail}" if before.tripped else "")
    ks._apply(lambda state, t: _trip(state, PANIC_REASON, detail, t, None), None)
    return "tripped"


__all__ = ["PANIC_REASON", "flatten_market", "market_paths", "mode_tag", "service_dir", "snapshot",
           "trip_kill_switch", "validate_market"]
