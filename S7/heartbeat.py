"""The one-line heartbeat S7 prints per closed candle, in every mode (dry-run, testnet, live):

    2024-01-01 12:00 BTCUSDT 1h close 43,210.5 | signal: enter (rule dip) | position 0.0123 | equity 10,012.3 USDT

(the candle's open time, UTC). ``signal`` is what the engine did with the candle: ``enter``/``exit``
with the rule (or the stop / kill-switch) that fired, ``hold``, or why nothing was sent
(``skipped``, ``blocked``, ``stale`` … with the reason).

>>> heartbeat_text(1704110400000, "BTCUSDT", "1h", 43210.5, "enter (rule dip)", 0.0123, 10012.3, "USDT")
'2024-01-01 12:00 BTCUSDT 1h close 43,210.5 | signal: enter (rule dip) | position 0.0123 | equity 10,012.3 USDT'
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def _num(x: float, decimals: int = 8) -> str:
    """``43,210.5`` -- thousands separators, up to ``decimals`` decimals, no trailing zeros."""
    text = f"{x:,.{decimals}f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def _price(x: float) -> str:
    return _num(x, 2 if abs(x) >= 1000 else 4 if abs(x) >= 1 else 8)


def heartbeat_text(open_ms: int, symbol: str, interval: str, close: float, signal: str, position: float,
                   equity: float | None, quote: str) -> str:
    when = datetime.fromtimestamp(open_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
    eq = "n/a" if equity is None else f"{equity:,.1f} {quote}"
    return (f"{when} {symbol} {interval} close {_price(close)} | signal: {signal} | position {_num(position)} "
            f"| equity {eq}")


def signal_text(d: Any) -> str:
    """What a :class:`S7.order_sender.Decision` says, in words."""
    action = getattr(d, "action", "none") or "none"
    if action == "buy":
        return f"enter (rule {d.entry_rule})" if d.entry_rule else "enter"
    if action == "sell":
        why = d.exit_rule or d.reason
        return f"exit ({why})" if why else "exit"
    if action == "none":
        return "hold"
    return f"{action} ({d.reason})" if d.reason else action


def heartbeat_line(engine: Any, decision: Any, candle) -> str:
    """The heartbeat of ``engine`` after it handled the closed ``candle`` (a one-row frame)."""
    close = float(candle["close"].iloc[-1])
    try:
        pos = engine.store.position(engine.symbol)
        qty = float(pos.qty)
    except Exception:   # a heartbeat never stops trading
        qty = 0.0
    equity = getattr(decision, "equity", None)
    if equity is None:
        try:
            equity = engine.equity(close)
        except Exception:
            equity = None
    interval = getattr(getattr(engine, "cfg", None), "interval", None) or getattr(engine, "interval", "")
    return heartbeat_text(int(decision.candle_open_ms), engine.symbol, interval, close, signal_text(decision),
                          qty, equity, getattr(engine, "quote", ""))
