"""Fixtures of the S3 tests: local LLM and news servers, fast retry settings,
hand-labelled headlines and the real CryptoLin headlines (skipped when absent).

Imported by ``tests/S3/conftest.py`` and by ``tests/test_S3.py`` (which lives
outside tests/S3 and so does not see that conftest)."""

from __future__ import annotations

import pandas as pd
import pytest

from S3.config import HttpConfig, LlmConfig, S3Config, load_config

#: Hand-labelled headlines whose sentiment no trader would dispute.
HAND_CASES = [
    ("Crypto exchange hacked, $200 million in bitcoin stolen", "bearish"),
    ("DeFi protocol exploited for $80M in flash-loan attack", "bearish"),
    ("China bans all cryptocurrency transactions", "bearish"),
    ("Binance announces delisting of five tokens", "bearish"),
    ("Bitcoin plunges 15% as $1 billion in longs face liquidation", "bearish"),
    ("Crypto lender files for bankruptcy after withdrawals halted", "bearish"),
    ("SEC sues exchange for fraud", "bearish"),
    ("SEC approves first spot bitcoin ETF", "bullish"),
    ("ETF approval sends bitcoin to an all-time high", "bullish"),
    ("Ether rallies 20% as institutional demand surges", "bullish"),
    ("Visa partners with crypto startup to expand stablecoin payments", "bullish"),
    ("Blockchain startup raises $50 million in funding round", "bullish"),
    ("El Salvador adopts bitcoin as legal tender", "bullish"),
    ("Bitcoin conference to be held in Miami on Thursday", "neutral"),
    ("Ethereum developers schedule a call for next week", "neutral"),
    ("What is a blockchain oracle?", "neutral"),
    ("Coinbase publishes its quarterly report on Tuesday", "neutral"),
]


@pytest.fixture
def hand_cases() -> pd.DataFrame:
    return pd.DataFrame(HAND_CASES, columns=["headline", "expected"])


@pytest.fixture
def fast_config() -> S3Config:
    """The shipped config with millisecond back-offs (tests stay fast)."""
    cfg = load_config()
    return cfg.model_copy(update={
        "http": HttpConfig(max_attempts=3, backoff_initial=0.01, backoff_max=0.02, max_retry_after=5),
        "llm": LlmConfig(**{**cfg.llm.model_dump(), "backoff_initial": 0.01, "backoff_max": 0.02,
                            "max_retry_after": 5, "timeout": 5}),
    })


@pytest.fixture
def llm_server():
    from S3.local.llm import LocalLLM

    with LocalLLM() as server:
        yield server


@pytest.fixture
def news_server():
    from S3.local.news import LocalNews

    with LocalNews() as server:
        yield server


@pytest.fixture
def llm_settings(settings_env, monkeypatch, llm_server):
    """Settings pointing the openai client at the local server, with a canary key."""
    from S1.settings import get_settings

    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-0123456789")
    monkeypatch.setenv("OPENAI_MODEL", "gpt-4o-mini")
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture(scope="session")
def cryptolin(shared_dir) -> pd.DataFrame:
    """The real CryptoLin dev headlines (id, date, headline, label 1/0/-1)."""
    path = shared_dir / "data/sentiment/cryptolin_dev.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return pd.read_csv(path)
