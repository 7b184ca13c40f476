"""The one typed settings object of the toolkit.

Every network client, path and secret comes from here: environment variables
first, then the ``.env`` file in the repository root (or the file named by
``TOOLKIT_ENV_FILE``). Real users get the real endpoints by default; tests and
the offline mode point the URLs at local servers.

Secrets are :class:`pydantic.SecretStr`: they print as ``**********`` and
:func:`redact` removes their values from any text (log lines, error messages,
reports) before it leaves the program.

>>> from S1.settings import Settings
>>> s = Settings(_env_file=None, binance_api_secret="canary-123")
>>> str(s.binance_api_secret)
'**********'
>>> s.redact("signature failed for canary-123")
'signature failed for ***'
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]

_SECRET_FIELDS = (
    "binance_api_key",
    "binance_api_secret",
    "binance_testnet_api_key",
    "binance_testnet_api_secret",
    "binance_futures_testnet_api_key",
    "binance_futures_testnet_api_secret",
    "openai_api_key",
    "cryptopanic_token",
    "x_bearer_token",
    "alert_webhook_url",
    "bus_url",
    "influx_token",
    "control_api_token",
    "s3_secret_access_key",
)


class Settings(BaseSettings):
    """Configuration of the whole toolkit (see ``.env.example`` for every key)."""

    model_config = SettingsConfigDict(
        env_file=os.environ.get("TOOLKIT_ENV_FILE", str(REPO_ROOT / ".env")),
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # --- Binance market data and trading endpoints -------------------------------
    binance_api_url: str = "https://api.binance.com/api"
    binance_ws_url: str = "wss://stream.binance.com:9443"
    binance_archive_url: str = "https://data.binance.vision"
    #: Dukascopy's public hourly tick files (S1/historical.py --source dukascopy)
    dukascopy_url: str = "https://datafeed.dukascopy.com/datafeed"
    binance_testnet_api_url: str = "https://testnet.binance.vision/api"
    binance_testnet_ws_url: str = "wss://stream.testnet.binance.vision"
    #: WebSocket API (S7's user-data stream); empty: Binance's endpoint, or the local test exchange's
    binance_testnet_ws_api_url: str | None = None
    binance_ws_api_url: str | None = None
    binance_api_key: SecretStr | None = None
    binance_api_secret: SecretStr | None = None
    binance_testnet_api_key: SecretStr | None = None
    binance_testnet_api_secret: SecretStr | None = None
    #: Binance USD-M futures testnet (S7/futures_client.py; the local test exchange in the tests)
    binance_futures_testnet_api_url: str = "https://testnet.binancefuture.com"
    binance_futures_testnet_api_key: SecretStr | None = None
    binance_futures_testnet_api_secret: SecretStr | None = None

    # --- HTTP behaviour -----------------------------------------------------------
    http_timeout: float = Field(10.0, gt=0, description="seconds per request")
    http_max_retries: int = Field(6, ge=0, le=20)
    rest_max_in_flight: int = Field(32, ge=1, le=64, description="parallel kline pages")
    rest_weight_budget: float = Field(
        0.8, gt=0, le=1, description="share of the exchange's REQUEST_WEIGHT limit to use"
    )

    # --- Files --------------------------------------------------------------------
    #: a folder, or ``s3://bucket/prefix`` for an S3-compatible store (kept as that string; see S1/storage.py)
    data_dir: Path | str = REPO_ROOT / "data"
    reports_dir: Path = REPO_ROOT / "reports"
    #: SQLite databases and state files when DATA_DIR is s3:// (they stay on this machine); empty: data/
    local_state_dir: Path | None = None

    # --- S3-compatible storage for DATA_DIR=s3://... (issue 20) ---------------------------
    s3_endpoint_url: str | None = None     # e.g. http://127.0.0.1:9000 (MinIO); empty: AWS
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_region: str | None = None

    # --- Other exchanges through CCXT (issue 11) ---------------------------------------
    ccxt_api_urls: str = Field("", description="per-exchange REST base overrides: okx=http://127.0.0.1:8000,...")
    ccxt_ws_urls: str = Field("", description="per-exchange WebSocket base overrides (ccxt.pro)")

    # --- LLM and news (S3) ----------------------------------------------------------
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    openai_model: str = "gpt-4o-mini"
    cryptopanic_token: SecretStr | None = None
    cryptopanic_url: str = "https://cryptopanic.com/api/developer/v2"
    x_bearer_token: SecretStr | None = None
    x_api_url: str = "https://api.x.com/2"
    news_feeds: str = (
        "https://www.coindesk.com/arc/outboundfeeds/rss/,"
        "https://cointelegraph.com/rss,"
        "https://decrypt.co/feed"
    )

    # --- Alerts (S6) ----------------------------------------------------------------
    alert_webhook_url: SecretStr | None = None
    alert_webhook_kind: str = "generic"

    # --- Deployment (S9): the Redis bus across hosts, the optional InfluxDB sink ------------
    #: redis://host:6379/0 (may hold a password, hence secret); empty: the in-process default
    bus_url: SecretStr | None = None
    influx_url: str | None = None
    influx_database: str = "toolkit"
    influx_token: SecretStr | None = None

    # --- S8 service: the control API (bound to this machine by default; token required) ----
    control_api_host: str = "127.0.0.1"
    control_api_port: int = Field(8008, ge=1, le=65535)
    control_api_token: SecretStr | None = None

    # --- Offline mode ---------------------------------------------------------------
    simulated_market: bool = Field(
        False, description="set by the offline mode: every output is labelled 'simulated'")
    offline: bool = Field(
        False, description="OFFLINE=1: every network command runs as with --offline (local exchange, simulated market)")

    # --- Logging --------------------------------------------------------------------
    log_level: str = "INFO"

    @field_validator("binance_api_url", "binance_testnet_api_url", "binance_archive_url",
                     "binance_ws_url", "binance_testnet_ws_url", "openai_base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @field_validator(*_SECRET_FIELDS, "s3_endpoint_url", "s3_access_key_id", "s3_region", "local_state_dir",
                     mode="before")
    @classmethod
    def _empty_is_none(cls, v):
        return None if v is None or (isinstance(v, str) and not v.strip()) else v

    @field_validator("data_dir", "reports_dir", "local_state_dir")
    @classmethod
    def _absolute(cls, v: Path | str | None, info) -> Path | str | None:
        if v is None or (info.field_name == "data_dir" and isinstance(v, str) and v.startswith("s3://")):
            return v.rstrip("/") if v is not None else v
        v = Path(v).expanduser()
        return v if v.is_absolute() else (REPO_ROOT / v)

    # ------------------------------------------------------------------------------
    def secret_values(self) -> list[str]:
        """The plain values of every configured secret (for redaction only)."""
        out = []
        for name in _SECRET_FIELDS:
            value = getattr(self, name)
            if value is not None and value.get_secret_value():
                out.append(value.get_secret_value())
        return out

    def redact(self, text: str) -> str:
        """Replace every configured secret value in ``text`` with ``***``."""
        return redact(text, self.secret_values())

    @property
    def is_local(self) -> bool:
        """True when the Binance REST URL points at this machine (tests, offline mode)."""
        return any(h in self.binance_api_url for h in ("127.0.0.1", "localhost", "[::1]"))


def redact(text: str, secrets: list[str]) -> str:
    """Replace each secret (longest first) in ``text`` with ``***``."""
    for value in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(value, "***")
    return text


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` after
    changing the environment, as the tests do)."""
    return Settings()


class RedactingFilter(logging.Filter):
    """Logging filter that strips secret values from every record it passes."""

    def __init__(self, settings: Settings | None = None):
        super().__init__()
        self._settings = settings

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = (self._settings or get_settings()).secret_values()
        if secrets:
            message = redact(record.getMessage(), secrets)
            record.msg, record.args = message, None
            if record.exc_text:
                record.exc_text = redact(record.exc_text, secrets)
        return True


def setup_logging(level: str | None = None, *, verbose: bool = False) -> None:
    """Configure root logging once: one line per record on stderr, secrets redacted."""
    settings = get_settings()
    lvl = "DEBUG" if verbose else (level or settings.log_level).upper()
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_toolkit", False):
            root.removeHandler(h)
    handler = logging.StreamHandler()
    handler._toolkit = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           "%Y-%m-%dT%H:%M:%SZ"))
    handler.formatter.converter = __import__("time").gmtime  # UTC timestamps
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(lvl)
    for noisy in ("urllib3", "asyncio", "aiohttp.access", "websockets", "numba", "matplotlib",
                  "httpx", "httpx2", "httpcore", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
