"""Frozen, validated configuration of the S3 sentiment pipeline.

Everything that is not a secret or an endpoint (those live in :mod:`S1.settings`)
comes from ``S3/sentiment.yaml`` (or the file passed as ``--config``): the news
sources' query parameters, HTTP retry policy, symbol aliases, LLM batching and
the price table, and the decay of the sentiment series. Unknown keys are
rejected with a message naming them, so a typo never silently does nothing.

>>> cfg = load_config()
>>> cfg.llm.batch_size > 0 and cfg.series.half_life
'6h'
>>> try:
...     S3Config.model_validate({"llm": {"batch_size": 0}})
... except ValidationError as exc:
...     print(exc.errors()[0]["loc"])
('llm', 'batch_size')
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from S1.errors import UserError
from S1.yaml_load import load_file

DEFAULT_CONFIG = Path(__file__).with_name("sentiment.yaml")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RssConfig(_Frozen):
    #: Feed URLs; empty means ``settings.news_feeds`` (``NEWS_FEEDS`` in ``.env``).
    feeds: tuple[str, ...] = ()


class CryptoPanicConfig(_Frozen):
    kind: Literal["news", "media", "all"] = "news"
    currencies: str = ""
    regions: str = "en"
    filter: str = ""
    max_pages: int = Field(3, ge=1, le=50)


class XConfig(_Frozen):
    query: str = "(bitcoin OR btc OR ethereum OR crypto) lang:en -is:retweet"
    max_results: int = Field(100, ge=10, le=100)
    max_pages: int = Field(3, ge=1, le=50)


class SourcesConfig(_Frozen):
    rss: RssConfig = RssConfig()
    cryptopanic: CryptoPanicConfig = CryptoPanicConfig()
    x: XConfig = XConfig()


class HttpConfig(_Frozen):
    max_attempts: int = Field(4, ge=1, le=20)
    backoff_initial: float = Field(0.5, ge=0)
    backoff_max: float = Field(8.0, ge=0)
    #: Longest Retry-After we wait out; beyond it the source is skipped.
    max_retry_after: float = Field(120.0, ge=0)
    max_bytes: int = Field(10_000_000, ge=1_000)
    user_agent: str = "binance-research-toolkit/0.1 (+news sentiment; feedparser)"


class ItemsConfig(_Frozen):
    #: Two items with the same normalised title within this window are one story.
    title_dedup_window_hours: float = Field(72.0, ge=0)
    #: A published_at later than the fetch time by more than this is clamped to the fetch time.
    max_future_skew_seconds: float = Field(300.0, ge=0)
    #: Date-only timestamps in imported files: ``end_of_day`` (no look-ahead) or ``start_of_day``.
    date_only: Literal["end_of_day", "start_of_day"] = "end_of_day"


class LlmConfig(_Frozen):
    batch_size: int = Field(20, ge=1, le=200)
    max_concurrency: int = Field(4, ge=1, le=64)
    #: Attempts per batch for transport errors (429/5xx/timeouts) and for invalid replies.
    max_attempts: int = Field(4, ge=1, le=20)
    backoff_initial: float = Field(1.0, ge=0)
    backoff_max: float = Field(30.0, ge=0)
    max_retry_after: float = Field(120.0, ge=0)
    timeout: float = Field(60.0, gt=0)
    temperature: float = Field(0.0, ge=0, le=2)
    max_text_chars: int = Field(400, ge=20, le=5000)
    response_format: Literal["json_schema", "json_object", "none"] = "json_schema"
    #: The prompt: a name in S3/prompts/ (``default``, ``cryptolin``) or a path to a YAML prompt file.
    prompt: str = "default"
    #: The shipped price table (USD per 1M tokens, with the date each price was taken); a path
    #: relative to S3/ or absolute; "" for none.
    prices_file: str = "prices.yaml"
    #: USD per million tokens, by model name (longest matching prefix wins): the entries of
    #: ``prices_file``, overridden/extended by the ones given here. ``{input, output[, as_of]}``.
    prices: dict[str, dict[str, float | str]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _merge_price_file(cls, data):
        if not isinstance(data, dict):
            return data
        name = data.get("prices_file", "prices.yaml")
        if name:
            shipped = load_price_file(name)
            data = {**data, "prices": {**shipped, **(data.get("prices") or {})}}
        return data

    @field_validator("prices", mode="before")
    @classmethod
    def _prices(cls, v: dict) -> dict:
        if not isinstance(v, dict):
            raise ValueError("prices must map model names to {input, output, as_of}")  # noqa: TRY004 (pydantic)
        out = {}
        for model, p in v.items():
            _check_price(model, p)
            out[model] = {k: (str(x) if k == "as_of" else float(x)) for k, x in p.items()}
        return out


def _check_price(model: str, p) -> None:
    ok = (isinstance(p, dict) and {"input", "output"} <= set(p) and not set(p) - {"input", "output", "as_of"}
          and all(isinstance(p[k], (int, float)) and not isinstance(p[k], bool) and p[k] >= 0
                  for k in ("input", "output")))
    if not ok:
        raise ValueError(f"prices.{model} must be {{input: USD/1M, output: USD/1M, as_of: YYYY-MM-DD}}")


def load_price_file(name: str | Path) -> dict[str, dict]:
    """The price table of a YAML file (``{model: {input, output, as_of}}``), relative to S3/.

    >>> load_price_file("prices.yaml")["gpt-4o-mini"]["input"]
    0.15
    """
    p = Path(name)
    p = p if p.is_absolute() else DEFAULT_CONFIG.parent / p
    raw = load_file(p, what="price file", fix="fix llm.prices_file in S3/sentiment.yaml (see S3/prices.yaml)") or {}
    if not isinstance(raw, dict):
        raise ValueError(f"price file {p} must map model names to {{input, output, as_of}}")  # noqa: TRY004
    for model, entry in raw.items():
        _check_price(model, entry)
    return {str(k): dict(v) for k, v in raw.items()}


class SeriesConfig(_Frozen):
    #: Half-life of an item's influence (pandas offset such as ``6h``, ``90min``, ``1d``).
    half_life: str = "6h"
    #: Weight of the neutral prior: evidence below it shrinks the score towards 0.
    prior_weight: float = Field(1.0, gt=0)

    @field_validator("half_life")
    @classmethod
    def _hl(cls, v: str) -> str:
        try:
            td = pd.Timedelta(v)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"half_life {v!r} is not a duration such as 6h or 90min") from exc
        if td <= pd.Timedelta(0):
            raise ValueError("half_life must be positive")
        return v

    @property
    def half_life_ms(self) -> int:
        return int(pd.Timedelta(self.half_life).total_seconds() * 1000)


class AssetsConfig(_Frozen):
    #: Optional YAML of more asset aliases, laid out like S3/assets.yaml; merged into it.
    extra_file: str = ""

    def tagger(self):
        """The :class:`S3.assets.AssetTagger` of the shipped dictionary plus ``extra_file``."""
        from S3.assets import load_tagger

        return load_tagger(self.extra_file or None)


class S3Config(_Frozen):
    sources: SourcesConfig = SourcesConfig()
    http: HttpConfig = HttpConfig()
    items: ItemsConfig = ItemsConfig()
    #: Symbol -> lower-case aliases found in titles (whole words); cashtags ($BTC) always count.
    symbols: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    #: The per-asset tags (``assets`` column, per-asset series): S3/assets.yaml + extra_file.
    assets: AssetsConfig = AssetsConfig()
    llm: LlmConfig = LlmConfig()
    series: SeriesConfig = SeriesConfig()


def load_config(path: str | Path | None = None) -> S3Config:
    """Read and validate the YAML config (default ``S3/sentiment.yaml``)."""
    p = Path(path) if path is not None else DEFAULT_CONFIG
    raw = load_file(p, what="config file", fix=f"pass an existing, valid YAML file, e.g. --config {DEFAULT_CONFIG}") or {}
    if not isinstance(raw, dict):
        raise UserError(f"{p} must hold a mapping at the top level", "see S3/sentiment.yaml for the layout")
    try:
        return S3Config.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise UserError(f"{p}: {where}: {first['msg']}",
                        f"fix it ({len(exc.errors())} problem(s)); S3/sentiment.yaml documents every key") from exc
