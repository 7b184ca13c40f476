"""USD-M perpetuals in dry-run: a simulated futures account and the engine that trades it
with S4's one decision function -- longs, shorts, reversals, trailing stops, funding and
liquidation, the accounting of :mod:`S5.futures` (``python S5/parity.py --market usdm``
proves the backtest and this engine trade the same, trade for trade).

- :class:`FuturesAccount` -- the dry-run venue: a USDT wallet, one signed position per
  symbol (isolated margin ``notional / leverage``), MARKET orders filled at the next price
  (``on_price``: a bar's open) with the fee on the notional, ``reduceOnly`` closes, funding
  (:meth:`FuturesAccount.fund`: ``qty x mark x rate``, paid by longs / received by shorts
  for a positive rate) and liquidation (:meth:`FuturesAccount.check_liquidation`: the first
  bracket's maintenance margin; the whole margin is lost).
- :class:`FuturesEngine` -- per closed candle: the candle's funding times and the
  liquidation check, the equity into the S6 kill-switch, the rules that fire
  (:func:`S4.evaluate.condition_masks`, long and short), :func:`S4.decide.decide`, and the
  order(s): an exit, an entry, or a reversal (the exit, then the opposite entry, both at the
  next price). Sizing is :func:`S4.decide.size_entry` capped at ``equity x leverage``; stops
  and take-profits are :func:`S4.decide.levels` by side, the trailing stop
  :func:`S4.decide.trail` after every candle that does not close the position.

The same engine runs the dry-run replay (``python -m S7.paper_replay --market usdm``) and the
executor's USD-M sessions (:mod:`S7.futures_session`, ``python S7/executor.py --market usdm``: the
dry-run on this account, the futures testnet on :class:`S7.futures_exchange.ExchangeAccount`, a
subclass booking the exchange's fills through :meth:`FuturesAccount.book`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from S4.decide import ENTER, EXIT, Bar, Policy, Position, decide, levels, size_entry, trail, trail_spec
from S4.evaluate import condition_masks
from S5.futures import FuturesSpec, funding_payment, side_sign


@dataclass
class Order:
    side: str            #: BUY / SELL
    qty: float
    reason: str
    position_side: str   #: the side of the position this order opens or closes
    opens: bool
    size: Any = None
    trail: tuple[str, float] | None = None


@dataclass
class FuturesAccount:
    """The simulated USD-M account (see the module docstring)."""

    balance: float
    fee_rate: float
    spec: FuturesSpec
    filters: Any = None
    position: Position | None = None
    margin: float = 0.0
    funding: float = 0.0                      #: funding paid by the open position
    entry_fee: float = 0.0
    entry_ms: int | None = None
    entry_reason: str | None = None
    pending: list[Order] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)
    fills: list[dict[str, Any]] = field(default_factory=list)
    slippage: float = 0.0                     #: dry-run MARKET fills: S5.costs.fill_price (against the side, tick)

    def fill_price(self, price: float, side: str) -> float:
        """The dry-run fill of a MARKET ``side`` order at ``price`` (the backtest's own function)."""
        from S5.costs import fill_price, price_grid

        tick, base = price_grid(self.filters)
        return fill_price(price, buy=side == "BUY", slippage=self.slippage, tick=tick, base=base)

    def submit(self, order: Order) -> None:
        self.pending.append(order)

    def equity(self, price: float) -> float:
        p = self.position
        if p is None:
            return self.balance
        return self.balance + side_sign(p.side) * p.qty * (price - p.entry_price)

    def on_price(self, price: float, t_ms: int) -> list[dict[str, Any]]:
        """Fill the pending MARKET orders at ``price`` in the order they were sent."""
        done = []
        for o in self.pending:
            px = self.fill_price(price, o.side)
            tr = self.book(o, px, o.qty * px * self.fee_rate, t_ms)
            if tr is not None:
                done.append(tr)
        self.pending = []
        return done

    def book(self, o: Order, price: float, fee: float, t_ms: int, **extra) -> dict[str, Any] | None:
        """Book one filled order (at ``price``, paying ``fee``); returns the closed trade, if any.
        The dry-run fills here at the next price; :class:`S7.futures_exchange.ExchangeAccount`
        books the exchange's fills here (``extra``: the exchange's ids, kept in ``fills``)."""
        self.fills.append({"side": o.side, "qty": o.qty, "price": price, "fee": fee, "time_ms": t_ms,
                           "reason": o.reason, **extra})
        if o.opens:
            stop, tp = levels(price, o.size, self.filters, side=o.position_side)
            self.position = Position(qty=o.qty, entry_price=price, stop=stop, take_profit=tp,
                                     side=o.position_side, trail=o.trail)
            self.balance -= fee
            self.margin = o.qty * price / self.spec.leverage
            self.funding, self.entry_fee, self.entry_ms, self.entry_reason = 0.0, fee, t_ms, o.reason
            return None
        return self._close(price, t_ms, o.reason, fee)

    def _close(self, price: float, t_ms: int, reason: str, fee: float) -> dict[str, Any]:
        p = self.position
        gross = side_sign(p.side) * p.qty * (price - p.entry_price)
        self.balance += gross - fee
        trade = {"side": p.side, "entry_ms": self.entry_ms, "exit_ms": t_ms, "entry_price": p.entry_price,
                 "exit_price": price, "qty": p.qty, "fees": self.entry_fee + fee, "funding": self.funding,
                 "pnl": gross - self.entry_fee - fee - self.funding, "exit_reason": reason}
        self.trades.append(trade)
        self.position = None
        return trade

    def fund(self, rate: float, mark: float) -> float:
        """One funding event on the open position; returns what it paid (negative: received)."""
        p = self.position
        if p is None:
            return 0.0
        pay = funding_payment(p.side, qty=p.qty, mark=mark, rate=rate)
        self.balance -= pay
        self.funding += pay
        return pay

    def check_liquidation(self, o: float, h: float, lo: float, t_ms: int) -> dict[str, Any] | None:
        p = self.position
        if p is None or not self.spec.liquidation:
            return None
        liq = self.spec.liquidation_price(p.side, qty=p.qty, entry=p.entry_price, margin=self.margin)
        short = p.side == "short"
        if not ((h >= liq) if short else (lo <= liq)):
            return None
        px = max(o, liq) if short else min(o, liq)
        left = self.margin + side_sign(p.side) * p.qty * (px - p.entry_price)
        return self._close(px, t_ms, "liquidation", left)


class FuturesEngine:
    """Candle by candle USD-M dry-run trading (see the module docstring)."""

    def __init__(self, *, rules, risk, account: FuturesAccount, interval: str, features, kill_switch=None,
                 use_stops: bool = True, flatten_on_trip: bool | None = None, fee_buffer: float = 0.003,
                 filters=None):
        from S1.intervals import interval_ms

        self.rules, self.risk, self.account = rules, risk, account
        self.features = features
        self.kill_switch = kill_switch
        self.filters = filters
        self.fee_buffer = fee_buffer
        self.step_ms = interval_ms(interval)
        flatten = risk.kill_switch.flatten_on_trip if flatten_on_trip is None else flatten_on_trip
        self.policy = Policy.from_rules(rules, use_stops=use_stops, flatten_on_trip=flatten)
        self.atr_col = f"atr{risk.stops.atr_period}"
        self.last_exit_ms: int | None = None
        self.decisions: list[Any] = []
        self._keep = rules.lookback() + 2          # the rows the conditions read (bars_ago, crosses)
        self._t: list[int] = []
        self._rows: list[dict[str, float]] = []

    def on_price(self, price: float, t_ms: int) -> None:
        for tr in self.account.on_price(price, t_ms):
            self._closed(tr)

    def closed(self, trades: list[dict[str, Any]], *, exit_open_ms: int | None = None) -> None:
        """Trades the venue closed outside :meth:`on_price` (the exchange's fills; a position
        the exchange liquidated or closed: ``exit_open_ms`` starts the cooldown there)."""
        for tr in trades:
            self._closed(tr)
        if exit_open_ms is not None:
            self.last_exit_ms = exit_open_ms

    def _closed(self, tr: dict[str, Any]) -> None:
        if self.kill_switch is not None:
            self.kill_switch.record_trade(tr["pnl"], at=pd.Timestamp(tr["exit_ms"], unit="ms", tz="UTC"))

    def _first(self, rules, mask) -> str | None:
        return rules[int(np.argmax(mask))].name if len(mask) and mask.any() else None

    def on_candle(self, open_ms: int, row: dict[str, float], *, last: bool = False, next_is_last: bool = False):
        """One closed candle (``row``: open/high/low/close); ``next_is_last``: an entry decided
        now would fill on the last candle (not taken, as in the backtest)."""
        acc, spec = self.account, self.account.spec
        if acc.position is not None:
            for k in spec.funding_between(open_ms * 1_000_000, (open_ms + self.step_ms) * 1_000_000):
                mark = spec.funding_marks[k]
                acc.fund(float(spec.funding_rates[k]), float(mark) if math.isfinite(mark) else row["open"])
            tr = acc.check_liquidation(row["open"], row["high"], row["low"], open_ms)
            if tr is not None:
                self._closed(tr)
                self.last_exit_ms = open_ms
        close = row["close"]
        eq = acc.equity(close)
        at = pd.Timestamp(open_ms + self.step_ms, unit="ms", tz="UTC")
        allowed = self.kill_switch.update_equity(eq, at=at) if self.kill_switch is not None else True
        self._t = (self._t + [open_ms])[-self._keep:]
        self._rows = (self._rows + [row])[-self._keep:]
        m = len(self._t)
        feats = self.features.arrays(np.array(self._t, dtype=np.int64))
        arrays = {c: feats[c] if c in feats else np.array([x[c] for x in self._rows])
                  for c in self.rules.required_columns()}
        ent, ext = condition_masks(arrays, self.rules, m)
        sent, sext = condition_masks(arrays, self.rules, m, short=True)
        r = self.rules
        bar = Bar(high=row["high"], low=row["low"], close=close, time=open_ms,
                  entry_rule=self._first(r.entry, ent[:, -1]), exit_rule=self._first(r.exit, ext[:, -1]),
                  short_entry_rule=self._first(r.short_entry, sent[:, -1]),
                  short_exit_rule=self._first(r.short_exit, sext[:, -1]))
        atr = float(feats[self.atr_col][-1]) if self.atr_col in feats else float("nan")
        atr_v = atr if math.isfinite(atr) and atr > 0 else None
        sizer = None if (last or next_is_last) else (
            lambda b, side="long": size_entry(equity=eq, cash=eq * spec.leverage, price=close, atr=atr_v,
                                              risk=self.risk, filters=self.filters, fee_buffer=self.fee_buffer,
                                              side=side))
        since = None if self.last_exit_ms is None else (open_ms - self.last_exit_ms) // self.step_ms
        pos = acc.position
        act = decide(bar, position=pos, policy=self.policy, entries_allowed=allowed, sizer=sizer,
                     bars_since_exit=since)
        self.decisions.append(act)
        if last:
            return act
        trailing = getattr(r, "trailing_stop", None)
        if act.kind == ENTER and sizer is not None:
            acc.submit(self._open_order(act, trailing, atr))
        elif act.kind == EXIT:
            acc.submit(Order("BUY" if pos.side == "short" else "SELL", pos.qty, act.reason, pos.side, False))
            self.last_exit_ms = open_ms
            if act.reverses and sizer is not None:
                acc.submit(self._open_order(act.reverse, trailing, atr))
        elif pos is not None:
            acc.position = trail(pos, bar)
        return act

    @staticmethod
    def _open_order(act, trailing, atr: float) -> Order:
        return Order("SELL" if act.side == "short" else "BUY", act.size.qty, f"entry:{act.rule}", act.side, True,
                     size=act.size, trail=trail_spec(trailing, atr) if trailing is not None else None)

    def finish(self, last_close: float, last_open_ms: int) -> None:
        """Close what is still open at the last close (``end``), as the backtest does."""
        acc = self.account
        acc.pending = []
        if acc.position is not None:
            px = acc.fill_price(last_close, "BUY" if acc.position.side == "short" else "SELL")
            acc._close(px, last_open_ms, "end", acc.position.qty * px * acc.fee_rate)


def replay_usdm(frame: pd.DataFrame, *, rules, risk, interval: str, filters, spec: FuturesSpec, balance: float,
                fee_rate: float, use_stops: bool, state_dir, features, slippage: float = 0.0) -> dict[str, Any]:
    """The USD-M dry-run replay of ``frame`` (see :func:`S7.paper_replay.replay_frame`)."""
    from S6.killswitch import KillSwitch

    ks = KillSwitch(risk, path=state_dir / "kill_switch.json")
    acc = FuturesAccount(balance=balance, fee_rate=fee_rate, spec=spec, filters=filters, slippage=slippage)
    eng = FuturesEngine(rules=rules, risk=risk, account=acc, interval=interval, features=features, kill_switch=ks,
                        use_stops=use_stops, filters=filters)
    opens = frame.index.as_unit("ms").asi8.astype(np.int64)
    cols = {c: frame[c].to_numpy(np.float64) for c in ("open", "high", "low", "close")}
    extra = [c for c in rules.required_columns() if c in frame.columns and c not in cols]
    for c in extra:
        cols[c] = frame[c].to_numpy(np.float64)
    n = len(frame)
    for i in range(n):
        eng.on_price(float(cols["open"][i]), int(opens[i]))
        row = {c: float(v[i]) for c, v in cols.items()}
        eng.on_candle(int(opens[i]), row, last=i == n - 1, next_is_last=i == n - 2)
    eng.finish(float(cols["close"][-1]), int(opens[-1]))
    iso = lambda ms: pd.Timestamp(int(ms), unit="ms", tz="UTC").isoformat()
    trades = [{"side": t["side"], "entry_time": iso(t["entry_ms"]), "exit_time": iso(t["exit_ms"]),
               "entry_price": float(t["entry_price"]), "exit_price": float(t["exit_price"]), "qty": float(t["qty"]),
               "exit_reason": t["exit_reason"], "funding": float(t["funding"]), "pnl": float(t["pnl"])}
              for t in acc.trades]
    return {"trades": trades, "orders": {"FILLED": len(acc.fills)}, "candles": n, "market": "usdm",
            "decisions": dict(pd.Series([a.kind for a in eng.decisions]).value_counts().to_dict()),
            "final_balance": acc.balance}


__all__ = ["FuturesAccount", "FuturesEngine", "Order", "replay_usdm"]
