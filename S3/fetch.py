"""HTTP GET with a timeout, a size cap and bounded retries (tenacity), shared by the
news sources.

Retried: timeouts, refused or dropped connections, 429 and 5xx. A ``Retry-After``
(seconds or an HTTP date) is waited out when it is at most ``max_retry_after``;
a longer one, a 4xx, or exhausted attempts raise :class:`FetchError`, which the
ingestion logs and skips: one failing source never stops the others.

Why requests + tenacity and not aiohttp here: a handful of feeds per run, fetched
in a small thread pool, gain nothing from an event loop, and requests' timeouts
and redirects are what feed servers expect.
"""

from __future__ import annotations

import email.utils
import logging
import time
from dataclasses import dataclass

import requests
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from S3.config import HttpConfig

log = logging.getLogger(__name__)


class FetchError(Exception):
    """A source could not be fetched (after the bounded retries). The message never
    contains query strings (tokens travel there)."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: dict
    url: str


def retry_after_seconds(headers, *, now: float | None = None) -> float | None:
    """Seconds a server asked us to wait: ``Retry-After`` (seconds or HTTP date),
    or X's ``x-rate-limit-reset`` (epoch seconds) on a 429.

    >>> retry_after_seconds({"Retry-After": "3"})
    3.0
    >>> retry_after_seconds({}) is None
    True
    """
    now = time.time() if now is None else now
    h = {k.lower(): v for k, v in dict(headers or {}).items()}
    value = h.get("retry-after")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                return max(0.0, email.utils.mktime_tz(parsed) - now)
    reset = h.get("x-rate-limit-reset")
    if reset is not None:
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            return None
    return None


def backoff_wait(initial: float, maximum: float):
    """tenacity exponential backoff with jitter (up to ``initial`` s), across tenacity 8 and 9
    (9.x renamed ``initial`` to ``multiplier``)."""
    try:
        return wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)
    except TypeError:  # tenacity < 9
        return wait_exponential_jitter(initial=initial, max=maximum, jitter=initial)


def _where(url: str) -> str:
    return url.split("?", 1)[0]


def http_get(url: str, *, params: dict | None = None, headers: dict | None = None,
             timeout: float = 10.0, config: HttpConfig | None = None,
             session: requests.Session | None = None) -> Response:
    """GET ``url`` and return its body; raise :class:`FetchError` when it cannot."""
    cfg = config or HttpConfig()
    sess = session or requests.Session()
    hdrs = {"User-Agent": cfg.user_agent, **(headers or {})}

    def once() -> Response:
        try:
            with sess.get(url, params=params, headers=hdrs, timeout=timeout, stream=True) as r:
                if r.status_code == 429 or r.status_code >= 500:
                    wait = retry_after_seconds(r.headers)
                    if wait is not None and wait > cfg.max_retry_after:
                        raise FetchError(f"{_where(url)}: HTTP {r.status_code}, server asks to wait "
                                         f"{wait:.0f}s (> max_retry_after {cfg.max_retry_after:g}s)")
                    raise _Retryable(f"HTTP {r.status_code}", wait)
                if r.status_code >= 400:
                    raise FetchError(f"{_where(url)}: HTTP {r.status_code} {r.reason}")
                body = bytearray()
                for chunk in r.iter_content(65536):
                    body += chunk
                    if len(body) > cfg.max_bytes:
                        raise FetchError(f"{_where(url)}: response larger than {cfg.max_bytes} bytes")
                return Response(r.status_code, bytes(body), dict(r.headers), _where(r.url))
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Retryable(type(exc).__name__) from exc

    backoff = backoff_wait(cfg.backoff_initial, cfg.backoff_max)

    def wait(state) -> float:
        exc = state.outcome.exception()
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return exc.retry_after
        return backoff(state)

    def before_sleep(state) -> None:
        log.info("%s: %s, retry %d/%d", _where(url), state.outcome.exception(),
                 state.attempt_number, cfg.max_attempts - 1)

    try:
        for attempt in Retrying(stop=stop_after_attempt(cfg.max_attempts), wait=wait, reraise=True,
                                retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
                                before_sleep=before_sleep):
            with attempt:
                return once()
    except _Retryable as exc:
        raise FetchError(f"{_where(url)}: {exc} after {cfg.max_attempts} attempt(s)") from None
    raise AssertionError("unreachable")  # pragma: no cover
