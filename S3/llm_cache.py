"""The LLM verdict cache: one SQLite file keyed by the hash of (model, prompt
hash, headline text), so a re-run makes no API call for items already scored.
Only valid verdicts are stored; ``unknown`` items are asked again next time.

>>> import tempfile, pathlib
>>> c = VerdictCache(pathlib.Path(tempfile.mkdtemp()) / "c.sqlite")
>>> k = cache_key("gpt-4o-mini", "v1", "BTC soars")
>>> c.put_many({k: ("bullish", 0.8, 0.9)}, model="gpt-4o-mini")
>>> c.get_many([k, "nope"]) == {k: ("bullish", 0.8, 0.9)}
True
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Mapping

from S1.datasets import llm_cache_path  # noqa: E402,F401  (the one place that names data files)


def cache_key(model: str, prompt_hash: str, text: str) -> str:
    """Content hash of one headline as the model saw it (model, prompt, cleaned text)."""
    return hashlib.sha256(f"{model}\x1f{prompt_hash}\x1f{text}".encode("utf-8")).hexdigest()


class VerdictCache:
    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else llm_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, model TEXT NOT NULL, "
                         "label TEXT NOT NULL, score REAL NOT NULL, confidence REAL NOT NULL, "
                         "created_at TEXT NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[str, float, float]]:
        keys = list(dict.fromkeys(keys))
        out: dict[str, tuple[str, float, float]] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = f"SELECT key, label, score, confidence FROM verdicts WHERE key IN ({','.join('?' * len(chunk))})"
            for k, label, score, conf in self._db.execute(q, chunk):
                out[k] = (label, float(score), float(conf))
        return out

    def put_many(self, verdicts: Mapping[str, tuple[str, float, float]], *, model: str) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?)",
                             [(k, model, v[0], float(v[1]), float(v[2]), now) for k, v in verdicts.items()])
        self._db.commit()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])

    def close(self) -> None:
        self._db.close()
