"""LLM sentiment classifier over any OpenAI-compatible chat-completions server
(OpenAI, or a local Ollama / vLLM / llama.cpp via ``OPENAI_BASE_URL``).

How a run goes:

1. Each headline is cleaned (HTML, control characters, spacing) and cut to
   ``llm.max_text_chars``; its cache key is the hash of (model, prompt hash,
   text) -- the prompt is data, ``S3/prompts/*.yaml`` (:mod:`S3.llm_prompt`). Cached verdicts are used as they are: a re-run makes no API call for
   items already scored (:mod:`S3.llm_cache`).
2. The rest go in batches of ``llm.batch_size``, each item with a short id,
   ``llm.max_concurrency`` requests in flight.
3. **Headline text is data.** The system message holds all instructions and says
   the items are untrusted quotations; the user message is only a JSON document
   ``{"items": [{"id": "1", "text": "..."}]}`` (``json.dumps``, ASCII-escaped),
   so no headline can close the quotation or add a field. The reply must be the
   structured output ``{"items": [{"id", "label", "score", "confidence"}]}``
   (``response_format`` json_schema, strict); it is validated with pydantic and
   *only* the label/score/confidence of requested ids are kept: extra ids, extra
   fields, other labels or text are discarded. A headline can thus change its own
   label and nothing else the program does.
4. Retries (tenacity, the openai client's own retries are off: ``max_retries=0``):
   429 and 5xx, timeouts and dropped connections are retried up to
   ``llm.max_attempts`` per batch. A ``Retry-After``/``retry-after-ms`` header pauses
   *every* batch until it has passed (one shared gate: with several requests in
   flight, the openai client's per-request retry would keep the others hammering a
   server that asked us to wait); otherwise exponential backoff with jitter. A
   reply that is not JSON, breaks the schema or misses ids is asked again for the
   missing items only; after the last attempt they are ``unknown``
   (score 0, confidence 0, not cached) -- the run never crashes on a bad reply.
5. Token use is summed from each reply's ``usage``; the estimated cost uses the
   price table ``llm.prices`` of ``S3/sentiment.yaml``.

A 401/403/404/400 is not retried: it raises :class:`S1.errors.UserError` naming the
setting to fix. If no request succeeds at all, :class:`S1.errors.NetworkError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Literal, Sequence

import openai
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from S1.errors import NetworkError, UserError
from S1.settings import Settings, get_settings
from S3.config import LlmConfig, S3Config, load_config
from S3.fetch import backoff_wait
from S3.items import clean_text
from S3.labels import UNKNOWN, result_frame
from S3.llm_cache import VerdictCache, cache_key
from S3.llm_prompt import RESPONSE_SCHEMA, Prompt, load_prompt

log = logging.getLogger(__name__)

#: The shipped prompt (S3/prompts/default.yaml); ``llm.prompt`` or ``--prompt`` chooses another.
SYSTEM_PROMPT = load_prompt("default").system


class Verdict(BaseModel):
    """One validated item of a reply."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)
    id: str
    label: Literal["bullish", "neutral", "bearish"]
    score: float = Field(ge=-1.0, le=1.0)
    confidence: float = Field(ge=0.0, le=1.0)

    @field_validator("label", mode="before")
    @classmethod
    def _label_case(cls, v):  # small local models write "Bullish" or " bullish"
        return v.strip().lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _sign(self):
        if (self.label == "bullish" and self.score < 0) or (self.label == "bearish" and self.score > 0):
            raise ValueError(f"score {self.score} contradicts label {self.label}")
        return self


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")
    items: list


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def parse_reply(content: str | None, wanted: set[str]) -> tuple[dict[str, Verdict], list[str]]:
    """Valid verdicts for the ``wanted`` ids in a reply, and the problems found.
    Anything else in the reply (other ids, extra fields, prose) is ignored.

    >>> ok, problems = parse_reply('{"items": [{"id": "1", "label": "bullish", "score": 0.7, '
    ...                            '"confidence": 0.9}, {"id": "9", "label": "bearish", "score": -1, '
    ...                            '"confidence": 1}]}', {"1", "2"})
    >>> sorted(ok), problems
    (['1'], ['id 9 was not asked for', 'missing ids: 2'])
    """
    if content is None:
        return {}, ["empty reply"]
    m = _FENCE.match(content)
    text = m.group(1) if m else content
    try:
        data = json.loads(text)
    except ValueError:
        return {}, [f"reply is not JSON: {content[:80]!r}"]
    try:
        reply = _Reply.model_validate(data)
    except ValidationError:
        return {}, ["reply has no items array"]
    good: dict[str, Verdict] = {}
    problems: list[str] = []
    dup: set[str] = set()
    for raw in reply.items:
        try:
            v = Verdict.model_validate(raw)
        except ValidationError as exc:
            rid = raw.get("id") if isinstance(raw, dict) else None
            problems.append(f"item {rid!r}: {exc.errors()[0]['msg']}")
            if isinstance(rid, str):
                dup.add(rid)  # an invalid entry for an id makes the id suspect
            continue
        if v.id not in wanted:
            problems.append(f"id {v.id} was not asked for")
            continue
        if v.id in good and good[v.id] != v:
            dup.add(v.id)
        good.setdefault(v.id, v)
    for rid in dup:
        if rid in good:
            problems.append(f"id {rid}: conflicting entries")
            good.pop(rid)
    missing = sorted(wanted - set(good) - dup, key=lambda s: (len(s), s))
    if missing:
        problems.append(f"missing ids: {', '.join(missing)}")
    return good, problems


def build_messages(items: Sequence[tuple[str, str]], system: str = SYSTEM_PROMPT) -> list[dict]:
    """The chat messages of one batch: instructions, then the items as a JSON document."""
    payload = json.dumps({"items": [{"id": i, "text": t} for i, t in items]}, ensure_ascii=True)
    return [{"role": "system", "content": system}, {"role": "user", "content": payload}]


def request_kwargs(model: str, messages: list[dict], cfg: LlmConfig) -> dict:
    """The body of one chat-completions request (also what the token estimate counts)."""
    kwargs: dict = {"model": model, "messages": messages, "temperature": cfg.temperature}
    if cfg.response_format == "json_schema":
        kwargs["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "sentiment_batch", "strict": True, "schema": RESPONSE_SCHEMA}}
    elif cfg.response_format == "json_object":
        kwargs["response_format"] = {"type": "json_object"}
    return kwargs


def price_for(model: str, prices: dict[str, dict[str, float]]) -> dict[str, float] | None:
    """Price entry of the longest model-name prefix in ``prices``.

    >>> price_for("gpt-4o-mini-2024-07-18", {"gpt-4o": {"input": 2.5}, "gpt-4o-mini": {"input": 0.15}})
    {'input': 0.15}
    """
    match = [k for k in prices if model.startswith(k)]
    return prices[max(match, key=len)] if match else None


@dataclass
class Usage:
    items: int = 0
    cached: int = 0
    requests: int = 0
    failed_requests: int = 0
    invalid_replies: int = 0
    unknown: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_missing: int = 0
    retries: int = 0              # requests that repeated an earlier one (after 429/5xx/invalid reply)
    model: str = ""
    price: dict | None = None
    prompt_name: str = ""
    prompt_hash: str = ""
    latencies: list = field(default_factory=list)  # seconds per answered request, client-side

    def latency_quantile(self, q: float) -> float | None:
        """Latency quantile (0.5 = p50) of the answered requests; None without any."""
        if not self.latencies:
            return None
        import numpy as np

        return float(np.quantile(np.asarray(self.latencies, dtype=float), q))

    @property
    def cost_usd(self) -> float | None:
        if self.price is None:
            return None
        return (self.prompt_tokens * self.price.get("input", 0.0)
                + self.completion_tokens * self.price.get("output", 0.0)) / 1e6

    def summary(self) -> str:
        cost = (f"estimated cost ${self.cost_usd:.4f}" if self.cost_usd is not None
                else f"cost unknown (add {self.model!r} to llm.prices in S3/sentiment.yaml)")
        note = f" ({self.usage_missing} replies without usage)" if self.usage_missing else ""
        return (f"LLM {self.model}: {self.items} item(s), {self.cached} from cache, {self.requests} API "
                f"request(s) ({self.failed_requests} failed, {self.retries} retries, {self.invalid_replies} invalid replies), "
                f"{self.unknown} unknown; tokens: {self.prompt_tokens} prompt + {self.completion_tokens} "
                f"completion{note}; {cost}")


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _Incomplete(Exception):
    pass


class _GiveUp(Exception):
    """Not worth retrying (e.g. a Retry-After longer than llm.max_retry_after)."""


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = getattr(exc.response, "headers", None) or {}
    for name, div in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) / div)
            except ValueError:
                import email.utils

                parsed = email.utils.parsedate_tz(value)
                if parsed is not None:
                    return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    return None


def _is_local(url: str) -> bool:
    return any(h in url for h in ("127.0.0.1", "localhost", "[::1]"))


@dataclass
class OpenAIClassifier:
    """``OpenAIClassifier().classify(["BTC ETF approved"])`` -> label/score/confidence frame.

    ``usage`` holds the counters of the last :meth:`classify` call.
    """

    settings: Settings | None = None
    config: LlmConfig | None = None
    cache: VerdictCache | None = None
    model: str | None = None
    progress: bool = True
    usage: Usage = field(default_factory=Usage)
    name: str = "openai"
    prompt: Prompt | None = None

    def __post_init__(self):
        self.settings = self.settings or get_settings()
        self.config = self.config or load_config().llm
        self.model = self.model or self.settings.openai_model
        self.prompt = self.prompt or load_prompt(self.config.prompt)
        key = self.settings.openai_api_key
        if key is None and not _is_local(self.settings.openai_base_url):
            raise UserError("OPENAI_API_KEY is not set",
                            "put it in .env, point OPENAI_BASE_URL at a local server, "
                            "or use --classifier lexicon / local:PATH")
        self._api_key = key.get_secret_value() if key is not None else "no-key-needed"
        if self.cache is None:  # (an empty cache is falsy: test for None)
            self.cache = VerdictCache()

    # ------------------------------------------------------------------ public
    def prepare(self, text: str) -> str:
        return clean_text(text)[: self.config.max_text_chars]

    def classify(self, texts: Sequence[str]) -> pd.DataFrame:
        """Classify ``texts`` (blocking; works inside Jupyter's running loop too)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.aclassify(texts))
        box: dict = {}

        def run():
            try:
                box["r"] = asyncio.run(self.aclassify(texts))
            except BaseException as exc:  # re-raised in the caller's thread
                box["e"] = exc

        t = threading.Thread(target=run)
        t.start()
        t.join()
        if "e" in box:
            raise box["e"]
        return box["r"]

    def plan(self, texts: Sequence[str]) -> tuple[list[str], dict, list[list[tuple[str, str]]]]:
        """(cache keys of ``texts``, verdicts known without a request, batches to send) -- what
        :meth:`classify` would do, without any request (``--estimate`` counts these batches)."""
        cfg = self.config
        prepared = [self.prepare(t) for t in texts]
        keys = [cache_key(self.model, self.prompt.hash, t) for t in prepared]
        verdicts: dict[str, tuple[str, float, float]] = self.cache.get_many(keys)
        todo = {}
        for k, t in zip(keys, prepared):
            if k not in verdicts and k not in todo:
                if t:
                    todo[k] = t
                else:
                    verdicts[k] = ("neutral", 0.0, 0.0)  # nothing to classify
        items = list(todo.items())
        return keys, verdicts, [items[i:i + cfg.batch_size] for i in range(0, len(items), cfg.batch_size)]

    def new_usage(self, n_items: int) -> Usage:
        return Usage(items=n_items, model=self.model, price=price_for(self.model, self.config.prices),
                     prompt_name=self.prompt.name, prompt_hash=self.prompt.hash)

    async def aclassify(self, texts: Sequence[str]) -> pd.DataFrame:
        cached = self.cache.get_many([cache_key(self.model, self.prompt.hash, self.prepare(t)) for t in texts])
        keys, verdicts, batches = self.plan(texts)
        self.usage = self.new_usage(len(keys))
        self.usage.cached = sum(1 for k in keys if k in cached)
        if batches:
            verdicts.update(await self._run_batches(batches))
        labels, scores, confs = [], [], []
        for k in keys:
            label, score, conf = verdicts.get(k, (UNKNOWN, 0.0, 0.0))
            labels.append(label), scores.append(score), confs.append(conf)
        self.usage.unknown = sum(1 for x in labels if x == UNKNOWN)
        return result_frame(labels, scores, confs)

    # ----------------------------------------------------------------- batches
    async def _run_batches(self, batches: list[list[tuple[str, str]]]) -> dict:
        cfg = self.config
        client = openai.AsyncOpenAI(api_key=self._api_key, base_url=self.settings.openai_base_url,
                                    max_retries=0, timeout=cfg.timeout)
        self._sem = asyncio.Semaphore(cfg.max_concurrency)
        self._blocked_until = 0.0
        self._ok_requests = 0
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(b) for b in batches), desc=f"LLM {self.model}", unit="item",
                   disable=None if self.progress else True, leave=False)
        results: dict = {}
        try:
            tasks = [asyncio.create_task(self._batch(client, b, bar)) for b in batches]
            try:
                for done in asyncio.as_completed(tasks):
                    results.update(await done)
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            bar.close()
            await client.close()
        if self._ok_requests == 0:
            raise NetworkError(f"no request to the LLM server at {self.settings.openai_base_url} succeeded "
                               f"({self.usage.failed_requests} failed)",
                               "check OPENAI_BASE_URL and that the server is up; cached verdicts are kept")
        return results

    async def _gate(self) -> None:
        loop = asyncio.get_running_loop()
        while (delay := self._blocked_until - loop.time()) > 0:
            await asyncio.sleep(delay)

    async def _batch(self, client, batch: list[tuple[str, str]], bar) -> dict:
        cfg = self.config
        ids = {str(i + 1): key for i, (key, _) in enumerate(batch)}
        text_of = {str(i + 1): text for i, (_, text) in enumerate(batch)}
        pending = set(ids)
        found: dict[str, tuple[str, float, float]] = {}
        backoff = backoff_wait(cfg.backoff_initial, cfg.backoff_max)

        def wait(state) -> float:
            exc = state.outcome.exception()
            if isinstance(exc, _Transient) and exc.retry_after is not None:
                return 0.0  # the shared gate holds the retry until Retry-After has passed
            if isinstance(exc, _Incomplete):
                return 0.0
            return backoff(state)

        def before_sleep(state) -> None:
            log.info("LLM batch: %s; attempt %d/%d", state.outcome.exception(), state.attempt_number + 1,
                     cfg.max_attempts)

        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(cfg.max_attempts), wait=wait,
                                               retry=retry_if_exception_type((_Transient, _Incomplete)),
                                               before_sleep=before_sleep, reraise=True):
                if attempt.retry_state.attempt_number > 1:
                    self.usage.retries += 1
                with attempt:
                    await self._attempt(client, sorted(pending, key=int), text_of, pending, found)
        except (_Transient, _Incomplete, _GiveUp) as exc:
            log.warning("LLM: %d item(s) marked unknown: %s", len(pending), exc)
        verdicts = {ids[i]: v for i, v in found.items()}
        if verdicts:
            self.cache.put_many(verdicts, model=self.model)
        bar.update(len(batch))
        return verdicts

    async def _attempt(self, client, want: list[str], text_of: dict, pending: set, found: dict) -> None:
        cfg = self.config
        messages = build_messages([(i, text_of[i]) for i in want], self.prompt.system)
        kwargs = request_kwargs(self.model, messages, cfg)
        await self._gate()
        async with self._sem:
            await self._gate()
            self.usage.requests += 1
            try:
                t0 = time.perf_counter()
                resp = await client.chat.completions.create(**kwargs)
                self.usage.latencies.append(time.perf_counter() - t0)
            except (openai.RateLimitError, openai.InternalServerError) as exc:
                self.usage.failed_requests += 1
                ra = _retry_after(exc)
                status = exc.status_code
                if ra is not None and ra > cfg.max_retry_after:
                    raise _GiveUp(f"HTTP {status}; Retry-After {ra:.0f}s exceeds llm.max_retry_after "
                                  f"{cfg.max_retry_after:g}s") from None
                if ra is not None:
                    loop = asyncio.get_running_loop()
                    self._blocked_until = max(self._blocked_until, loop.time() + ra)
                    log.warning("LLM server answered HTTP %s: pausing all requests %.1fs (Retry-After)", status, ra)
                raise _Transient(f"HTTP {status}", ra) from None
            except openai.APIStatusError as exc:
                self.usage.failed_requests += 1
                if exc.status_code in (408, 409) or exc.status_code >= 500:
                    raise _Transient(f"HTTP {exc.status_code}") from None
                raise self._fatal(exc) from None
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                self.usage.failed_requests += 1
                raise _Transient(type(exc).__name__) from None
        self._ok_requests += 1
        u = getattr(resp, "usage", None)
        if u is not None and getattr(u, "prompt_tokens", None) is not None:
            self.usage.prompt_tokens += int(u.prompt_tokens or 0)
            self.usage.completion_tokens += int(u.completion_tokens or 0)
        else:
            self.usage.usage_missing += 1
        content = None
        choices = getattr(resp, "choices", None) or []
        if choices and getattr(choices[0], "message", None) is not None:
            msg = choices[0].message
            content = None if getattr(msg, "refusal", None) else msg.content
        good, problems = parse_reply(content, set(want))
        for i, v in good.items():
            found[i] = (v.label, v.score, v.confidence)
            pending.discard(i)
        if pending:
            self.usage.invalid_replies += 1
            raise _Incomplete(f"invalid reply for {len(pending)} item(s): {'; '.join(problems)[:200]}")

    def _fatal(self, exc: openai.APIStatusError) -> UserError:
        s = exc.status_code
        msg = self.settings.redact(str(getattr(exc, "message", exc)))[:200]
        if s in (401, 403):
            return UserError(f"the LLM server refused the key (HTTP {s}: {msg})",
                             "check OPENAI_API_KEY (and OPENAI_BASE_URL) in .env")
        if s == 404:
            return UserError(f"the LLM server does not know model {self.model!r} or the path (HTTP 404: {msg})",
                             "check OPENAI_MODEL and OPENAI_BASE_URL (it usually ends in /v1)")
        return UserError(f"the LLM server rejected the request (HTTP {s}: {msg})",
                         "if it lacks structured output, set llm.response_format: json_object (or none) "
                         "in S3/sentiment.yaml")


def make_openai_classifier(*, settings: Settings | None = None, config: S3Config | None = None,
                           progress: bool = True) -> OpenAIClassifier:
    config = config or load_config()
    return OpenAIClassifier(settings=settings, config=config.llm, progress=progress)
