"""A dry estimate of what an LLM run will cost, before any request (``--estimate``).

Method (no tokenizer: ``tiktoken`` downloads its encodings from the internet on first
use, which this project cannot rely on): the requests are built exactly as they would be
sent -- same batches, ids, system prompt, JSON of the cleaned headlines, json_schema --
minus the headlines already in the cache, and their characters are divided by
:data:`CHARS_PER_TOKEN` (4, OpenAI's rule of thumb for English text), rounded up, plus
OpenAI's chat-format overhead (:data:`PER_MESSAGE` tokens per message, :data:`PER_REPLY`
per reply). The reply is estimated from one typical verdict per item,
``{"id": "7", "label": "bullish", "score": -0.6, "confidence": 0.8}``. Retries are not
included (the report counts them afterwards).

How close it is: against a server counting 4 characters per token (the local server of
the tests) the prompt estimate is 1-2 tokens per request above, the completion estimate
within one token per request plus a quarter token per item (derived and tested in
``tests/S3/test_evaluate_llm.py``). Against OpenAI's tokenizer the error is that of
"4 characters per token" on headlines and JSON, not measured here (no internet): the
internet test prints the estimate beside the served usage.

>>> from S3.config import load_config
>>> cfg = load_config().llm
>>> e = estimate_batches([[("k1", "Bitcoin ETF approved"), ("k2", "Exchange hacked")]],
...                      model="gpt-4o-mini", system="x" * 400, config=cfg)
>>> e.requests, e.to_send, e.completion_tokens, e.prompt_tokens > 100
(1, 2, 37, True)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from S3.config import LlmConfig

CHARS_PER_TOKEN = 4
PER_MESSAGE = 3   # tokens OpenAI's chat format adds around each message
PER_REPLY = 3     # ... and to prime the reply
TYPICAL_VERDICT = {"label": "bullish", "score": -0.6, "confidence": 0.8}


def text_tokens(n_chars: int) -> int:
    return math.ceil(n_chars / CHARS_PER_TOKEN)


def request_prompt_tokens(kwargs: dict) -> int:
    """Estimated prompt tokens of one request body (messages + json_schema)."""
    chars = sum(len(str(m.get("content", ""))) for m in kwargs["messages"])
    rf = kwargs.get("response_format") or {}
    if rf.get("type") == "json_schema":
        chars += len(json.dumps(rf["json_schema"]["schema"]))
    return text_tokens(chars) + PER_MESSAGE * len(kwargs["messages"]) + PER_REPLY


def reply_tokens(ids: list[str]) -> int:
    """Estimated completion tokens of the reply to a batch with these ids."""
    return text_tokens(len(json.dumps({"items": [{"id": i, **TYPICAL_VERDICT} for i in ids]})))


@dataclass(frozen=True)
class Estimate:
    model: str
    prompt_name: str
    prompt_hash: str
    items: int            # rows asked for
    cached: int           # rows whose verdict is already in the cache (free)
    to_send: int          # distinct headlines that would be sent
    requests: int
    prompt_tokens: int
    completion_tokens: int
    price: dict | None

    @property
    def cost_usd(self) -> float | None:
        if self.price is None:
            return None
        return (self.prompt_tokens * self.price["input"] + self.completion_tokens * self.price["output"]) / 1e6

    def text(self) -> str:
        cost = (f"${self.cost_usd:.4f} (prices as of {self.price.get('as_of', '?')})"
                if self.cost_usd is not None else
                f"unknown (no price for {self.model!r} in S3/prices.yaml or llm.prices)")
        return (f"estimate for {self.model}, prompt {self.prompt_name} ({self.prompt_hash[:12]}): "
                f"{self.items} row(s), {self.cached} already cached, {self.to_send} headline(s) to send in "
                f"{self.requests} request(s); ~{self.prompt_tokens} prompt + ~{self.completion_tokens} "
                f"completion tokens (4 characters per token, no retries); cost {cost}")

    def as_dict(self) -> dict:
        return {"model": self.model, "prompt": self.prompt_name, "prompt_hash": self.prompt_hash,
                "items": self.items, "cached": self.cached, "to_send": self.to_send, "requests": self.requests,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": self.cost_usd, "method": f"characters / {CHARS_PER_TOKEN}, no retries"}


def estimate_batches(batches: list[list[tuple[str, str]]], *, model: str, system: str, config: LlmConfig,
                     items: int | None = None, cached: int = 0, prompt_name: str = "", prompt_hash: str = "",
                     price: dict | None = None) -> Estimate:
    """The estimate of sending ``batches`` (lists of ``(cache key, cleaned text)``)."""
    from S3.llm import build_messages, request_kwargs

    prompt = completion = 0
    for batch in batches:
        ids = [str(i + 1) for i in range(len(batch))]
        kwargs = request_kwargs(model, build_messages(list(zip(ids, [t for _, t in batch])), system), config)
        prompt += request_prompt_tokens(kwargs)
        completion += reply_tokens(ids)
    n = sum(len(b) for b in batches)
    return Estimate(model=model, prompt_name=prompt_name, prompt_hash=prompt_hash,
                    items=n if items is None else items, cached=cached, to_send=n, requests=len(batches),
                    prompt_tokens=prompt, completion_tokens=completion, price=price)


def estimate_classifier(clf, texts) -> Estimate:
    """What ``clf.classify(texts)`` (an :class:`S3.llm.OpenAIClassifier`) would send, without sending it."""
    from S3.llm import price_for

    keys, _known, batches = clf.plan(texts)
    hits = clf.cache.get_many(keys)
    return estimate_batches(batches, model=clf.model, system=clf.prompt.system, config=clf.config,
                            items=len(keys), cached=sum(1 for k in keys if k in hits),
                            prompt_name=clf.prompt.name, prompt_hash=clf.prompt.hash,
                            price=price_for(clf.model, clf.config.prices))
