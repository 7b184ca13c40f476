"""S6's risk settings turned into the engine's explicit hooks (size, stops, kill-switch).

:func:`risk_hooks` reads an S6 :class:`~S6.config.RiskConfig` and returns
:class:`RiskHooks` for :func:`S5.engine.run_backtest`:

- **size** -- S6's own functions (:func:`S6.sizing.size_position`, and
  :func:`S6.sizing.kelly_fraction` for Kelly) are evaluated per entry on a unit of
  equity at the fill price ``open[t+1] x (1 + slippage)``. The engine spends
  ``notional x (1 + fee)`` of the equity, so the quantity bought is exactly S6's:
  ``fixed``: ``fixed_fraction x equity / price``; ``atr``: ``R x equity / (k x ATR[t])``
  (or the ``stop_loss_pct`` stop distance); all capped at ``max_position_fraction``.
  The fill price cancels out of the quantity: nothing after bar t's close is used.
  An entry with an unknown ATR (warm-up) is skipped.
- **kelly** -- win rate and payoff from the strategy's own closed trades *before* the
  entry is decided (a first pass of the same signals, returns are size-free), no
  position until ``kelly_min_trades`` have closed, ``kelly_fraction`` x Kelly capped
  at ``kelly_cap``.
- **stops** -- S6's :func:`~S6.sizing.stop_price` / :func:`~S6.sizing.take_profit_price`
  at the fill price: ``fill - k x ATR[t]`` (or ``fill x (1 - stop_loss_pct)``) and
  ``take_profit_rr`` x the stop distance (or ``take_profit_pct``), passed to vectorbt
  as fractions of the fill price.
- **kill-switch** -- S6's ``KillSwitchConfig`` (``flatten_on_trip`` closes the position).

>>> import numpy as np, pandas as pd
>>> from S6.config import RiskConfig
>>> t = pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC")
>>> f = pd.DataFrame({"open": [100.0, 100, 100], "high": [100.0] * 3, "low": [100.0] * 3,
...                   "close": [100.0] * 3, "atr14": [5.0] * 3, "entry": [True, False, False]}, index=t)
>>> cfg = RiskConfig().replace(kill_switch={"max_drawdown": None})
>>> h = risk_hooks(f, cfg, interval="1h", fees=0.0, slippage=0.0)
>>> [round(float(x[0]), 12) for x in (h.size, h.sl_stop, h.tp_stop)]   # 1% / (2 x 5) x 100 = 10% of equity
[0.1, 0.1, 0.2]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from S1.errors import UserError


@dataclass(frozen=True)
class RiskHooks:
    """The engine arguments built from a RiskConfig (arrays are per decision bar)."""

    size: np.ndarray | Callable[[Any], np.ndarray]
    sl_stop: np.ndarray | None
    tp_stop: np.ndarray | None
    kill_switch: Any | None
    flatten_on_trip: bool
    config: Any

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        return {"risk": {"sizing": cfg.sizing.model_dump(), "stops": cfg.stops.model_dump(),
                         "kill_switch": cfg.kill_switch.model_dump() if self.kill_switch is not None else None}}


def load_risk(risk) -> Any:
    """A RiskConfig from a RiskConfig, a path, or None (-> None)."""
    from S6.config import RiskConfig

    if risk is None or isinstance(risk, RiskConfig):
        return risk
    if isinstance(risk, (str, Path)):
        return RiskConfig.load(risk)
    raise UserError(f"risk must be an S6 RiskConfig or a YAML path, got {type(risk).__name__}",
                    "pass --risk S6/risk.yaml or RiskConfig.load()")


def atr_values(frame: pd.DataFrame, period: int) -> np.ndarray:
    """``atr<period>`` from the frame (S2 wrote it) or computed with S2's TA-Lib kernel."""
    col = f"atr{period}"
    if col in frame.columns:
        return frame[col].to_numpy(dtype=np.float64, na_value=np.nan)
    from S2.ta import atr

    return atr(frame["high"].to_numpy(np.float64), frame["low"].to_numpy(np.float64),
               frame["close"].to_numpy(np.float64), period)


def _kill_switch_enabled(ks) -> bool:
    return any(v is not None for v in (ks.max_drawdown, ks.daily_loss_limit, ks.max_consecutive_losses))


def risk_hooks(frame: pd.DataFrame, risk, *, bars=None, costs=None, interval: str | None = None,
               fees: float | None = None, slippage: float | None = None, entries=None) -> RiskHooks:
    """Build the size / stop / kill-switch hooks of ``risk`` for the bars of ``frame``.

    Give ``bars`` and ``costs`` (as :func:`S5.engine.run_backtest` does) or
    ``interval``, ``fees`` and ``slippage``.
    """
    from S5.bars import Bars
    from S5.costs import Costs
    from S6.sizing import SizingError, kelly_fraction, size_position

    cfg = load_risk(risk)
    if cfg is None:
        raise UserError("no risk config given", "pass --risk S6/risk.yaml")
    if bars is None:
        if interval is None:
            raise UserError("risk_hooks needs bars= or interval=", "e.g. interval='1h'")
        bars = Bars.from_frame(frame, interval)
    if costs is None:
        costs = Costs(fees=0.001 if fees is None else fees, slippage=0.0005 if slippage is None else slippage)
    n = len(bars)
    ent = np.asarray(frame["entry"] if entries is None else entries, dtype=bool)
    decided = np.flatnonzero(ent[:-1])                        # an entry on the last bar never fills
    fill = bars.open[decided + 1] * (1.0 + costs.slippage)
    sz, st = cfg.sizing, cfg.stops
    need_atr = st.stop_loss_pct is None
    atr = None
    if need_atr:
        a = atr_values(frame, st.atr_period)[decided]
        atr = np.where(np.isfinite(a) & (a > 0), a, np.nan)  # unknown ATR: no size (atr) / no stop
    method = sz.method
    try:
        res = size_position(equity=np.ones(len(decided)), price=fill, config=cfg, atr=atr,
                            method="fixed" if method == "kelly" else method)
    except SizingError as exc:
        raise UserError(f"risk sizing: {exc.problem}", exc.fix or "check S6/risk.yaml") from None
    sl = tp = None
    if res.stop is not None:
        sl = np.full(n, np.nan)
        sl[decided] = 1.0 - np.asarray(res.stop, dtype=np.float64) / fill
    if res.take_profit is not None:
        tp = np.full(n, np.nan)
        tp[decided] = np.asarray(res.take_profit, dtype=np.float64) / fill - 1.0
    cost = 1.0 + costs.entry_rate   # the fee the entry pays (maker in the mixed / maker models)
    if method == "kelly":
        def size(first) -> np.ndarray:
            det = first.trade_details.sort_values("exit_bar", kind="stable")
            exit_bar = det["exit_bar"].to_numpy()
            ret = det["return"].to_numpy(np.float64)
            known = np.searchsorted(exit_bar, decided, side="right")   # trades closed by the decision bar
            cum_n = np.r_[0, np.arange(1, len(ret) + 1)]
            cum_w = np.r_[0, np.cumsum(ret > 0)]
            cum_l = np.r_[0, np.cumsum(ret < 0)]
            cum_ws = np.r_[0.0, np.cumsum(np.where(ret > 0, ret, 0.0))]
            cum_ls = np.r_[0.0, np.cumsum(np.where(ret < 0, -ret, 0.0))]
            k = known
            with np.errstate(divide="ignore", invalid="ignore"):
                p = np.where(cum_n[k] > 0, cum_w[k] / cum_n[k], np.nan)
                avg_w = np.where(cum_w[k] > 0, cum_ws[k] / cum_w[k], np.nan)
                avg_l = np.where(cum_l[k] > 0, cum_ls[k] / cum_l[k], np.nan)
                payoff = np.where(cum_l[k] == 0, np.inf, np.where(cum_w[k] == 0, 0.0, avg_w / avg_l))
            payoff = np.where(cum_n[k] > 0, payoff, np.nan)
            f = kelly_fraction(win_rate=p, payoff=payoff, fraction=sz.kelly_fraction, cap=sz.kelly_cap)
            f = np.where((cum_n[k] >= sz.kelly_min_trades) & np.isfinite(f), f, 0.0)
            out = np.zeros(n)
            out[decided] = np.minimum(f, sz.max_position_fraction) * cost
            return out
        size_arg: np.ndarray | Callable = size
    else:
        notional = np.asarray(res.size, dtype=np.float64) * fill     # share of equity, fees excluded
        size_arg = np.zeros(n)
        size_arg[decided] = np.where(np.isfinite(notional), notional * cost, 0.0)
    ks = cfg.kill_switch if _kill_switch_enabled(cfg.kill_switch) else None
    return RiskHooks(size_arg, sl, tp, ks, bool(cfg.kill_switch.flatten_on_trip), cfg)


__all__ = ["RiskHooks", "atr_values", "load_risk", "risk_hooks"]
