"""Every Prometheus metric of the service, in one place (``GET /metrics``).

The names and labels are a contract: the S9 alert rules and Grafana dashboards are written against
exactly these. Change them here only together with those.

| metric | type | labels | what |
|---|---|---|---|
| ``toolkit_up`` | gauge | -- | 1 while the service runs |
| ``toolkit_candles_total`` | counter | market | closed candles the streamer stored since the service started |
| ``toolkit_last_candle_close_timestamp_seconds`` | gauge | market | close time of the newest closed candle (Unix s) |
| ``toolkit_stream_reconnects_total`` | counter | market | WebSocket reconnects of the market's streamer |
| ``toolkit_orders_total`` | counter | market, side, status | orders, once per status seen (stores read every second) |
| ``toolkit_position_quantity`` | gauge | market | the strategy's position (base asset) |
| ``toolkit_equity_quote`` | gauge | market | equity in the quote asset |
| ``toolkit_kill_switch_tripped`` | gauge | market | 1 when the market's kill-switch is tripped |
| ``toolkit_worker_restarts_total`` | counter | worker | restarts by the supervisor (crash or missed heartbeat) |
| ``toolkit_worker_up`` | gauge | worker | 1 while the worker's process runs |
| ``toolkit_decision_latency_seconds`` | histogram | -- | closed candle -> order sent, in the executor |

``market`` is ``BTCUSDT`` style; ``worker`` is the worker's name (``executor-btcusdt_1m``, ``streamer-1m``).

>>> m = ServiceMetrics()
>>> m.candles.labels(market="BTCUSDT").inc(3)
>>> b"toolkit_candles_total{market=\\"BTCUSDT\\"} 3.0" in m.render()
True
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: closed candle -> order sent: the target is p99 <= 100 ms, so most buckets are below that
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)

METRIC_NAMES = (
    "toolkit_up", "toolkit_candles_total", "toolkit_last_candle_close_timestamp_seconds",
    "toolkit_stream_reconnects_total", "toolkit_orders_total", "toolkit_position_quantity", "toolkit_equity_quote",
    "toolkit_kill_switch_tripped", "toolkit_worker_restarts_total", "toolkit_worker_up",
    "toolkit_decision_latency_seconds",
)


class ServiceMetrics:
    """The metrics on their own registry (no process-global state: tests can build several)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.up = Gauge("toolkit_up", "1 while the service runs", registry=r)
        # prometheus-client appends _total to counters itself
        self.candles = Counter("toolkit_candles", "Closed candles stored by the streamer", ["market"], registry=r)
        self.last_close = Gauge("toolkit_last_candle_close_timestamp_seconds",
                                "Close time of the newest closed candle (Unix seconds)", ["market"], registry=r)
        self.reconnects = Counter("toolkit_stream_reconnects", "Stream reconnects", ["market"], registry=r)
        self.orders = Counter("toolkit_orders", "Orders seen reaching a status", ["market", "side", "status"],
                              registry=r)
        self.position = Gauge("toolkit_position_quantity", "The strategy's position (base asset)", ["market"],
                              registry=r)
        self.equity = Gauge("toolkit_equity_quote", "Equity in the quote asset", ["market"], registry=r)
        self.kill_switch = Gauge("toolkit_kill_switch_tripped", "1 when the kill-switch is tripped", ["market"],
                                 registry=r)
        self.restarts = Counter("toolkit_worker_restarts", "Worker restarts by the supervisor", ["worker"],
                                registry=r)
        self.worker_up = Gauge("toolkit_worker_up", "1 while the worker's process runs", ["worker"], registry=r)
        self.latency = Histogram("toolkit_decision_latency_seconds", "Closed candle -> order sent",
                                 buckets=LATENCY_BUCKETS, registry=r)

    def declare(self, *, markets: list[str], workers: list[str]) -> None:
        """Create every labelled series at 0 so dashboards see them before the first event."""
        for m in markets:
            self.candles.labels(market=m)
            self.reconnects.labels(market=m)
        for w in workers:
            self.restarts.labels(worker=w)
            self.worker_up.labels(worker=w).set(0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["LATENCY_BUCKETS", "METRIC_NAMES", "ServiceMetrics"]
