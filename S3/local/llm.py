"""A local OpenAI-compatible chat-completions server on 127.0.0.1 (aiohttp.web in
a thread), for tests and for running S3 offline with ``--classifier openai``.

It speaks the real protocol -- ``POST /v1/chat/completions`` returning
``chat.completion`` objects with ``choices`` and ``usage``, ``GET /v1/models``,
OpenAI-style error bodies -- so the real ``openai`` client is exercised end to end.
Its "model" is deterministic: it reads the JSON items of the user message and
answers with the lexicon classifier's verdicts (or with a ``responder`` you pass:
``items -> list of verdicts | reply dict | raw content string``), e.g.
:func:`labelling_responder` -- answers from a known labelling ``text -> label``, so a
test knows the expected accuracy of an evaluation without trusting the code under test.

Token usage is counted like a tokenizer of about 4 characters per token:
``prompt_tokens = (characters of the message contents + of the json_schema, which
OpenAI also bills) // 4 + 8``, ``completion_tokens = characters of the reply // 4 + 1``.

Fault injection (:meth:`LocalLLM.inject`) for the next matching requests:
``429`` / ``500`` / ``503`` with a ``Retry-After``, any other status code (``"400"``,
``"404"`` ...) as an OpenAI-style error, ``drop`` (connection closed),
``malformed`` (content that is not JSON), ``schema`` (a label outside the enum,
a score out of range and a missing id), ``delay``.

Every request is recorded (``server.requests``: parsed body, headers, time), so
tests can check exactly what the client sent -- e.g. that a hostile headline
arrived as quoted data.

Run it by hand::

    python -m S3.local.llm --port 8088     # then OPENAI_BASE_URL=http://127.0.0.1:8088/v1
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Callable

from aiohttp import web

from S1.local.faults import Fault, FaultQueue
from S1.local.server import LocalServer


def lexicon_responder(items: list[dict]) -> list[dict]:
    """The default "model": the lexicon classifier's verdict for each item."""
    from S3.lexicon import LexiconClassifier

    clf = _LEXICON.get("clf") or _LEXICON.setdefault("clf", LexiconClassifier())
    res = clf.classify([str(it.get("text", "")) for it in items])
    return [{"id": it["id"], "label": r.label, "score": round(float(r.score), 4),
             "confidence": round(max(float(r.confidence), 0.5), 4)}
            for it, r in zip(items, res.itertuples(index=False))]


_LEXICON: dict = {}

#: The verdict a labelling responder gives for each label (score, confidence).
LABEL_VERDICTS = {"bullish": (0.6, 0.8), "neutral": (0.0, 0.8), "bearish": (-0.6, 0.8)}


class labelling_responder:  # (lower case: used like a function)
    """A "model" that answers from a known labelling: ``labels[text]`` for each item
    (texts as the client sends them: cleaned, cut to ``llm.max_text_chars``); a text
    outside the labelling gets ``default`` and is counted in :attr:`misses`.

    >>> r = labelling_responder({"BTC soars": "bullish"})
    >>> r([{"id": "1", "text": "BTC soars"}, {"id": "2", "text": "?"}])[0]["label"], r.misses
    ('bullish', 1)
    """

    def __init__(self, labels: dict[str, str], *, default: str = "neutral"):
        bad = {v for v in labels.values() if v not in LABEL_VERDICTS}
        if bad or default not in LABEL_VERDICTS:
            raise ValueError(f"labels must be bullish/neutral/bearish, got {sorted(bad | {default})}")
        self.labels, self.default, self.misses = dict(labels), default, 0

    def __call__(self, items: list[dict]) -> list[dict]:
        out = []
        for it in items:
            label = self.labels.get(str(it.get("text", "")))
            if label is None:
                self.misses += 1
                label = self.default
            score, conf = LABEL_VERDICTS[label]
            out.append({"id": it["id"], "label": label, "score": score, "confidence": conf})
        return out


class LocalLLM(LocalServer):
    """``with LocalLLM() as llm: llm.base_url`` -> ``http://127.0.0.1:PORT/v1``."""

    def __init__(self, *, responder: Callable[[list[dict]], list[dict]] | None = None,
                 host: str = "127.0.0.1", port: int = 0, model: str = "local-lexicon",
                 api_key: str | None = None):
        self.responder = responder or lexicon_responder
        self.host, self.port, self.model = host, port, model
        self.api_key = api_key  # when set, other keys get a 401 like OpenAI's
        self.in_flight = 0
        self.max_in_flight = 0
        self.faults = FaultQueue()
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self.app.router.add_get("/v1/models", self._models)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    thread_name = "local-llm"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def inject(self, kind: str, *, count: int = 1, **kw) -> Fault:
        """Queue a fault for the next ``count`` requests: ``"429"``, ``"500"``, ``"503"``, ``"drop"``,
        ``"malformed"``, ``"schema"``, ``"delay"`` (``delay=`` seconds) or any other status code."""
        return self.faults.add(Fault(kind=kind, count=count, **kw))

    def user_items(self, i: int = -1) -> list[dict]:
        """The items the client sent in request ``i`` (parsed from its user message)."""
        msgs = self.requests[i]["body"]["messages"]
        return json.loads([m for m in msgs if m["role"] == "user"][-1]["content"])["items"]

    # ------------------------------------------------------------------ server
    def _take_fault(self) -> Fault | None:
        return self.faults.take()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": 0, "owned_by": "local"}]})

    @staticmethod
    def _error(status: int, message: str, kind: str, headers: dict | None = None) -> web.Response:
        return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": None}},
                                 status=status, headers=headers or {})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._chat_inner(request)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _chat_inner(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        fault = self._take_fault()
        record = {"body": body, "headers": dict(request.headers), "t": time.monotonic(),
                  "fault": fault.kind if fault else None, "usage": None}
        with self._lock:
            self.requests.append(record)
        if fault is not None:
            hdr = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            if fault.kind == "429":
                return self._error(429, "Rate limit reached for requests", "requests", hdr)
            if fault.kind in ("500", "503"):
                return self._error(int(fault.kind), "The server had an error while processing your request.",
                                   "server_error", hdr)
            if fault.kind == "drop":
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError()
            if fault.kind == "delay":
                await asyncio.sleep(fault.delay)
            elif fault.kind.isdigit():
                return self._error(int(fault.kind), f"Injected error {fault.kind}.", "invalid_request_error")
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return self._error(401, "You didn't provide an API key.", "invalid_request_error")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return self._error(401, "Incorrect API key provided.", "invalid_request_error")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._error(400, "'messages' is a required property", "invalid_request_error")
        try:
            user = [m for m in messages if m.get("role") == "user"][-1]["content"]
            items = json.loads(user)["items"]
        except (ValueError, KeyError, IndexError, TypeError):
            items = None
        if items is None:
            content = "I can only classify a JSON object with an items array."
        elif fault is not None and fault.kind == "malformed":
            content = '{"items": [{"id": "1", "label": "bullish", '  # cut off: not JSON
        else:
            verdicts = self.responder(items)
            if fault is not None and fault.kind == "schema" and verdicts:
                verdicts = [dict(v) for v in verdicts]
                verdicts[0]["label"] = "very bullish"
                if len(verdicts) > 1:
                    verdicts[1]["score"] = 7.5
                if len(verdicts) > 2:
                    verdicts.pop(2)
            if isinstance(verdicts, str):      # a responder may also return the raw content
                content = verdicts
            elif isinstance(verdicts, dict):   # ... or the whole reply object
                content = json.dumps(verdicts)
            else:
                content = json.dumps({"items": verdicts})
        self._counter += 1
        rf = body.get("response_format") or {}
        schema = (rf.get("json_schema") or {}).get("schema") if isinstance(rf, dict) else None
        schema_chars = len(json.dumps(schema)) if schema is not None else 0
        prompt_tokens = (sum(len(str(m.get("content", ""))) for m in messages) + schema_chars) // 4 + 8
        completion_tokens = len(content) // 4 + 1
        record["usage"] = (prompt_tokens, completion_tokens)
        return web.json_response({
            "id": f"chatcmpl-local{self._counter}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "system_fingerprint": "fp_local",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


def main(argv=None) -> int:
    from S1.cli import ArgumentParser

    p = ArgumentParser(description="local OpenAI-compatible server (lexicon 'model') for offline S3 runs")
    p.add_argument("--port", type=int, default=8088)
    args = p.parse_args(argv)
    with LocalLLM(port=args.port) as llm:
        print(f"serving on {llm.base_url} (Ctrl-C stops); set OPENAI_BASE_URL={llm.base_url}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    from S1.cli import main_entry

    main_entry(main)
