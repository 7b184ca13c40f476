"""The executor's session settings and their up-front checks (light imports, so a
bad command line is answered in one line before the heavy modules load).

>>> from S1.settings import Settings
>>> cfg = SessionConfig(symbol="btcusdt", interval="1h", rules=Path("S4/rules.yaml"), mode="dry-run")
>>> check_config(cfg, Settings(_env_file=None)).symbol
'BTCUSDT'
>>> check_config(SessionConfig(symbol="BTCUSDT", interval="1h", rules=Path("S4/rules.yaml"), mode="live"),
...              Settings(_env_file=None))
Traceback (most recent call last):
...
S1.errors.UserError: --live trades real money and needs --i-understand-this-trades-real-money -- add that flag if you mean it; otherwise use --testnet (the default) or --dry-run
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from S1.errors import UserError
from S1.intervals import check_interval
from S1.options import DEFAULT_FEE, DEFAULT_SLIPPAGE_BPS
from S1.settings import Settings

DEFAULT_BALANCE = 10_000.0
DEFAULT_FEE_RATE = DEFAULT_FEE            #: the backtest's (S1/options.py: one default for every script)
TESTNET_KEYS_URL = "https://testnet.binance.vision"
SOURCES = ("db", "rest")
ORDER_TYPES = ("market", "limit")
#: The options that only mean something with --order-type limit (field -> flag).
LIMIT_OPTIONS = {"post_only": "--post-only", "limit_offset_bps": "--limit-offset-bps",
                 "limit_timeout_s": "--limit-timeout", "limit_timeout_candles": "--limit-timeout-candles",
                 "limit_fallback": "--limit-fallback"}


@dataclass(frozen=True)
class SessionConfig:
    """Everything a session needs (frozen; :func:`check_config` validates it up front)."""

    symbol: str
    interval: str
    rules: Path
    mode: str = "testnet"
    i_understand_real_money: bool = False
    source: str = "db"
    db: Path | None = None
    replay_days: float | None = None
    duration: float | None = None
    poll: float = 0.02
    window: int | None = None
    risk_config: Path | None = None
    indicators_config: Path | None = None
    state: Path | None = None
    kill_switch_state: Path | None = None
    flatten_on_trip: bool | None = None
    balance: float = DEFAULT_BALANCE
    fee_rate: float = DEFAULT_FEE_RATE
    slippage_bps: float = DEFAULT_SLIPPAGE_BPS   #: dry-run MARKET fills, as the backtest (S5.costs.fill_price)
    fee_asset: str = "quote"                   #: dry-run commission: quote (as the backtest) | received
    recv_window_ms: int = 5000
    max_candle_age_s: float | None = None
    exchange_info: Path | None = None
    use_stops: bool = True
    order_log: Path | None = None
    order_type: str = "market"                 #: market | limit (S7.limit_orders)
    post_only: bool | None = None              #: limit: LIMIT_MAKER instead of LIMIT GTC
    limit_offset_bps: float | None = None      #: limit: BUY below / SELL above the close (default 0)
    limit_timeout_s: float | None = None       #: limit: cancel after this many seconds ...
    limit_timeout_candles: int | None = None   #: ... or after N candles (default 1)
    limit_fallback: str | None = None          #: limit: none | market (the unfilled remainder)
    user_stream: bool = True                   #: testnet/live: the user-data stream (S7.user_stream)

    def limit_policy(self):
        """The :class:`S7.limit_orders.LimitPolicy` of ``--order-type limit`` (None for market)."""
        if self.order_type != "limit":
            return None
        from S7.limit_orders import LimitPolicy

        return LimitPolicy(post_only=bool(self.post_only), offset_bps=self.limit_offset_bps or 0.0,
                           timeout_s=self.limit_timeout_s, timeout_candles=self.limit_timeout_candles,
                           fallback=self.limit_fallback or "none")

    @property
    def replay(self) -> bool:
        return self.replay_days is not None

    @property
    def state_tag(self) -> str:
        return "replay" if self.replay else {"dry-run": "dryrun"}.get(self.mode, self.mode)


# ---------------------------------------------------------------------- checks
def check_config(cfg: SessionConfig, settings: Settings) -> SessionConfig:
    """Validate and normalise; every problem is one :class:`UserError` line with a fix."""
    from S1.datasets import normalize_symbol

    symbol = normalize_symbol(cfg.symbol)
    check_interval(cfg.interval)
    if cfg.mode not in ("dry-run", "testnet", "live"):
        raise UserError(f"unknown mode {cfg.mode!r}", "use --dry-run, --testnet or --live")
    if cfg.replay and cfg.mode != "dry-run":
        raise UserError("--replay-days replays past candles and only works with --dry-run",
                        "add --dry-run (a replay never sends orders to an exchange)")
    if cfg.replay and not 0 < cfg.replay_days <= 3650:
        raise UserError(f"--replay-days must be more than 0 and at most 3650, got {cfg.replay_days:g}", "e.g. --replay-days 7")
    if cfg.mode == "live":
        if not cfg.i_understand_real_money:
            raise UserError("--live trades real money and needs --i-understand-this-trades-real-money",
                            "add that flag if you mean it; otherwise use --testnet (the default) or --dry-run")
        if settings.binance_api_key is None or settings.binance_api_secret is None:
            raise UserError("--live needs BINANCE_API_KEY and BINANCE_API_SECRET",
                            "put your live keys in .env (never commit them), or use --testnet / --dry-run")
    if cfg.mode == "testnet" and (settings.binance_testnet_api_key is None
                                  or settings.binance_testnet_api_secret is None):
        raise UserError("--testnet needs BINANCE_TESTNET_API_KEY and BINANCE_TESTNET_API_SECRET",
                        f"get free testnet keys at {TESTNET_KEYS_URL} (log in, 'Generate HMAC_SHA256 Key') and put "
                        "them in .env, or run with --dry-run (no keys needed)")
    if cfg.source not in SOURCES:
        raise UserError(f"unknown --source {cfg.source!r}", f"use one of {', '.join(SOURCES)}")
    if cfg.duration is not None and cfg.duration <= 0:
        raise UserError(f"--duration must be a positive number of seconds, got {cfg.duration:g}", "e.g. --duration 60")
    if not 0.005 <= cfg.poll <= 60:
        raise UserError(f"--poll must be between 0.005 and 60 seconds, got {cfg.poll:g}", "e.g. --poll 0.05")
    if cfg.window is not None and not 30 <= cfg.window <= 5000:
        raise UserError(f"--window must be between 30 and 5000 candles, got {cfg.window}", "e.g. --window 300")
    if cfg.balance <= 0:
        raise UserError(f"--cash must be positive, got {cfg.balance:g}", "e.g. --cash 10000")
    if not 0 <= cfg.fee_rate < 0.05:
        raise UserError(f"--fee must be in [0, 0.05), got {cfg.fee_rate:g}", "e.g. --fee 0.001 (0.1 %)")
    if cfg.fee_asset not in ("quote", "received"):
        raise UserError(f"--fee-asset must be quote or received, got {cfg.fee_asset!r}",
                        "e.g. --fee-asset quote (as the backtest books fees)")
    if not 0 <= cfg.slippage_bps <= 500:
        raise UserError(f"--slippage-bps must be in [0, 500], got {cfg.slippage_bps:g}", "e.g. --slippage-bps 2")
    if not 1000 <= cfg.recv_window_ms <= 60_000:
        raise UserError(f"--recv-window must be in 1000..60000 ms, got {cfg.recv_window_ms}", "e.g. --recv-window 5000")
    if cfg.max_candle_age_s is not None and cfg.max_candle_age_s < 0:
        raise UserError("--max-candle-age must be >= 0 seconds (0: act on any candle)", "e.g. --max-candle-age 90")
    _check_limit(cfg)
    if not Path(cfg.rules).is_file():
        raise UserError(f"rules file {cfg.rules} does not exist", "pass an existing YAML file, e.g. --rules S4/rules.yaml")
    return replace(cfg, symbol=symbol)


def _check_limit(cfg: SessionConfig) -> None:
    if cfg.order_type not in ORDER_TYPES:
        raise UserError(f"unknown --order-type {cfg.order_type!r}", "use --order-type market (default) or limit")
    given = [flag for name, flag in LIMIT_OPTIONS.items() if getattr(cfg, name) not in (None, False)]
    if cfg.order_type == "market":
        if given:
            raise UserError(f"{given[0]} only applies to LIMIT orders", "add --order-type limit, or drop it")
        return
    if cfg.limit_fallback not in (None, "none", "market"):
        raise UserError(f"unknown --limit-fallback {cfg.limit_fallback!r}", "use --limit-fallback none or market")
    if cfg.limit_timeout_s is not None and cfg.limit_timeout_candles is not None:
        raise UserError("--limit-timeout and --limit-timeout-candles both set the wait", "give only one of them")
    if cfg.limit_timeout_s is not None and not 0 < cfg.limit_timeout_s <= 604_800:
        raise UserError(f"--limit-timeout must be more than 0 and at most 604800 seconds, got {cfg.limit_timeout_s:g}",
                        "e.g. --limit-timeout 30")
    if cfg.limit_timeout_candles is not None and not 1 <= cfg.limit_timeout_candles <= 1000:
        raise UserError(f"--limit-timeout-candles must be in 1..1000, got {cfg.limit_timeout_candles}",
                        "e.g. --limit-timeout-candles 2")
    off = cfg.limit_offset_bps or 0.0
    if not -500 <= off <= 1000:
        raise UserError(f"--limit-offset-bps must be in [-500, 1000], got {off:g}", "e.g. --limit-offset-bps 5")
    if cfg.post_only and off < 0:
        raise UserError(f"--post-only with --limit-offset-bps {off:g} prices the order through the market, so the "
                        "exchange would always refuse it", "use an offset >= 0 with --post-only")


__all__ = ["DEFAULT_BALANCE", "DEFAULT_FEE_RATE", "LIMIT_OPTIONS", "ORDER_TYPES", "SOURCES", "SessionConfig",
           "TESTNET_KEYS_URL", "check_config"]
