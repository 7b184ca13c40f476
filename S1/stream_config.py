"""What the streamer streams and how: :class:`StreamConfig` (validated, frozen) and the
reconnect backoff policy shared by every streamer (:mod:`S1.stream_client`,
:mod:`S1.ccxt_stream`, :mod:`S1.book_stream`).

>>> StreamConfig(symbols=("BTCUSDT",), duration=60).db_path.name
'btcusdt_1m_realtime.db'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tenacity import wait_exponential, wait_random

from S1.datasets import normalize_symbol, realtime_db_path
from S1.errors import UserError
from S1.intervals import check_interval

STREAMS = ("kline", "trades")
TRADE_STREAMS = ("aggTrade", "trade")
MAX_STREAMS = 1024  # per connection (Binance limit)


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    """What to stream and how (validated; every bad value names its fix).

    >>> StreamConfig(symbols=("btcusdt", "ETH/USDC")).streams
    ('btcusdt@kline_1m', 'ethusdc@kline_1m')
    """

    symbols: tuple[str, ...] = ("BTCUSDT",)
    interval: str = "1m"
    db_path: Path | None = None
    stream: str = "kline"
    trade_stream: str = "aggTrade"
    duration: float | None = None
    backfill_minutes: float = 60.0
    status_every: float = 60.0
    max_failures: int = 10
    backoff_initial: float = 0.5
    backoff_max: float = 60.0
    write_in_progress: bool = True
    commit_interval: float = 0.01
    commit_rows: int = 5000
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    open_timeout: float = 10.0
    healthy_after: float = 10.0
    trade_close_grace_ms: int = 2000
    #: file-name prefix of the exchange (``S1.ccxt_source.Venue.token``); ``None`` = Binance spot
    exchange: str | None = None

    def __post_init__(self):
        syms = (self.symbols,) if isinstance(self.symbols, str) else tuple(self.symbols)
        if not syms:
            raise UserError("no symbol given", "pass --symbol BTCUSDT or --symbols BTCUSDT,ETHUSDC")
        syms = tuple(dict.fromkeys(normalize_symbol(s) for s in syms))
        object.__setattr__(self, "symbols", syms)
        check_interval(self.interval)
        if self.stream not in STREAMS:
            raise UserError(f"unknown --stream {self.stream!r}", f"use one of {', '.join(STREAMS)}")
        if self.trade_stream not in TRADE_STREAMS:
            raise UserError(f"unknown trade stream {self.trade_stream!r}", f"use one of {', '.join(TRADE_STREAMS)}")
        if self.stream == "trades" and self.interval != "1m":
            raise UserError(f"--stream trades builds 1m candles, not {self.interval}",
                            "use --aggregate 1m (or --stream kline for other intervals)")
        if len(syms) > MAX_STREAMS:
            raise UserError(f"{len(syms)} symbols on one connection", f"Binance allows {MAX_STREAMS} streams; split them")
        for name, lo in (("duration", 0), ("status_every", 0), ("backoff_initial", 0), ("backoff_max", 0),
                         ("commit_interval", 0), ("ping_interval", 0), ("ping_timeout", 0), ("open_timeout", 0)):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or not v > lo):
                raise UserError(f"--{name.replace('_', '-')} must be a positive number of seconds, got {v!r}",
                                f"e.g. --{name.replace('_', '-')} 60")
        if not isinstance(self.backfill_minutes, (int, float)) or self.backfill_minutes < 0:
            raise UserError(f"--backfill-minutes must be >= 0, got {self.backfill_minutes!r}", "e.g. --backfill-minutes 60")
        if not isinstance(self.max_failures, int) or self.max_failures < 1:
            raise UserError(f"--max-failures must be a whole number >= 1, got {self.max_failures!r}",
                            "e.g. --max-failures 10")
        if self.db_path is None:
            db = realtime_db_path(list(syms), "1m" if self.stream == "trades" else self.interval,
                                  kind="trades" if self.stream == "trades" else "kline", exchange=self.exchange)
            object.__setattr__(self, "db_path", db)
        object.__setattr__(self, "db_path", Path(self.db_path))

    @property
    def streams(self) -> tuple[str, ...]:
        kind = f"kline_{self.interval}" if self.stream == "kline" else self.trade_stream
        return tuple(f"{s.lower()}@{kind}" for s in self.symbols)

    def url(self, ws_base: str) -> str:
        base = ws_base.rstrip("/")
        for suffix in ("/ws", "/stream"):
            base = base.removesuffix(suffix)
        return f"{base}/stream?streams={'/'.join(self.streams)}"


def backoff(cfg: StreamConfig):
    """Exponential backoff with jitter: ``initial * 2**(n-1)`` capped at ``backoff_max``,
    plus up to ``initial`` of random jitter (a tenacity wait strategy).

    >>> w = backoff(StreamConfig(backoff_initial=0.5, backoff_max=4))
    >>> base = [min(4, 0.5 * 2 ** (n - 1)) for n in (1, 2, 3, 8)]
    >>> base
    [0.5, 1.0, 2.0, 4]
    >>> all(b <= w(_Attempt(n)) <= b + 0.5 for n, b in zip((1, 2, 3, 8), base))
    True
    """
    return wait_exponential(multiplier=cfg.backoff_initial, max=cfg.backoff_max) + wait_random(0, cfg.backoff_initial)


class _Attempt:
    """The bit of a tenacity retry state its wait strategies read."""

    def __init__(self, n: int):
        self.attempt_number = n
