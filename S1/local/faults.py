"""One fault-injection mechanism for every local server (Binance REST/archive, the signed test
exchange, the OpenAI-compatible LLM server, the news server).

A test queues a :class:`Fault`; the server asks its :class:`FaultQueue` for the fault of each
request and acts on ``kind`` (each server documents the kinds it understands: ``"429"``/``"418"``
with ``Retry-After``, ``"status"``/``"500"`` errors, ``"drop"``, ``"delay"``, ``"truncate"``, ...).

>>> q = FaultQueue()
>>> _ = q.add(Fault(kind="429", path="klines", count=2, after=1))
>>> [getattr(q.take("/api/v3/klines"), "kind", None) for _ in range(4)]
[None, '429', '429', None]
>>> _ = q.add(Fault(kind="error", path="/api/v3/order", method="POST", exact=True))
>>> q.take("/api/v3/order/test", method="POST"), q.take("/api/v3/order", method="GET")
(None, None)
>>> q.take("/api/v3/order", method="POST").kind
'error'
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class Fault:
    """One injected fault, applied to the next ``count`` matching requests after letting ``after`` through.

    ``path``: a substring of the request path (``exact=True``: the whole path; ``None``: every request);
    ``method``: only requests with this HTTP method (``None``: any). The other fields are the fault's
    parameters, read by the server for the kinds that use them.
    """

    kind: str
    path: str | None = None
    method: str | None = None
    exact: bool = False
    count: int = 1
    after: int = 0
    status: int = 500
    retry_after: float | None = 1.0
    delay: float = 0.0

    def matches(self, path: str, method: str | None) -> bool:
        if self.method is not None and method is not None and self.method != method.upper():
            return False
        if self.path is None:
            return True
        return self.path == path if self.exact else self.path in path


class FaultQueue:
    """Thread-safe queue of :class:`Fault` (the servers run their event loop in a thread)."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        if fault.method is not None:
            fault.method = fault.method.upper()
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, path: str = "", method: str | None = None) -> Fault | None:
        """The fault for this request (or None). ``after`` counts every matching request since injection."""
        chosen = None
        with self._lock:
            for f in list(self._faults):
                if not f.matches(path, method):
                    continue
                if f.after > 0:
                    f.after -= 1
                    continue
                if chosen is None:
                    chosen = f
                    f.count -= 1
                    if f.count <= 0:
                        self._faults.remove(f)
        return chosen

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)

    def __iter__(self):
        with self._lock:
            return iter(list(self._faults))
