"""Which assets a news item is about: deterministic tags from a ticker/name dictionary.

The dictionary is ``S3/assets.yaml`` (plus the optional ``assets.extra_file`` of
``S3/sentiment.yaml``, merged into it). Per asset: ``names`` (whole words/phrases,
any case), ``cased`` (exact case only -- for tickers that are also words, such as
SOL, LINK, DOT, NEAR -- and ignored in ALL-CAPS text), ``cashtags`` (``$XBT``; the
asset code itself always counts) and ``stop`` phrases that are *not* about the
asset ("Ripple effect", "ETH Zurich"); a text holding a stop phrase of an asset does
not count that asset's ``cased`` aliases either ("Department of Government Efficiency
(DOGE)" is not dogecoin), its ``names`` still count.

Matching is whole-word (``eth`` never inside "Ethiopia" or "method") and the longest
phrase wins at a position ("Bitcoin Cash" is BCH, not BTC). Only assets of the
dictionary are ever returned: an unknown cashtag such as ``$SCAM`` tags nothing, so
news text can never invent an asset (nor a file name). The text is only searched
with fixed regular expressions; nothing in it is executed or obeyed.

>>> tagger = default_tagger()
>>> tagger.tag("Ether ETF approved; $SOL rallies while Bitcoin Cash slips")
('BCH', 'ETH', 'SOL')
>>> tagger.tag("El sol brilla: Ethiopia's method to tax crypto")
()
>>> tagger.tag("Fed decision has a ripple effect on markets"), tagger.tag("Ripple wins in court")
((), ('XRP',))
>>> tagger.tag("SOL SURGES AS NEAR AND LINK LAG"), tagger.tag("$SOL SURGES")
((), ('SOL',))
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from S1.errors import UserError
from S1.yaml_load import load_file

DEFAULT_ASSETS = Path(__file__).with_name("assets.yaml")

_CODE = re.compile(r"^(?=.*[A-Z])[A-Z0-9]{2,15}$")
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{1,14})(?!\w)")
_WORD = re.compile(r"[^\W\d_]{2,}")


class AssetEntry(BaseModel):
    """The aliases of one asset (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    names: tuple[str, ...] = ()
    cased: tuple[str, ...] = ()
    cashtags: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()

    @field_validator("names", "cased", "stop")
    @classmethod
    def _phrases(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            if not isinstance(p, str) or not p.strip() or len(p) > 60:
                raise ValueError(f"{p!r}: aliases are non-empty phrases of at most 60 characters")
        return tuple(" ".join(p.split()) for p in v)

    @field_validator("cashtags")
    @classmethod
    def _tags(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for t in v:
            t = str(t).lstrip("$").upper()
            if not re.fullmatch(r"[A-Z][A-Z0-9]{1,14}", t):
                raise ValueError(f"cashtag {t!r} must be letters/digits such as XBT")
            out.append(t)
        return tuple(out)


def _norm(phrase: str) -> str:
    return " ".join(phrase.casefold().split())


def _pattern(phrase: str) -> str:
    return r"\s+".join(re.escape(w) for w in phrase.split())


class AssetTagger:
    """Tags texts with the assets of a dictionary ``{code: AssetEntry}``.

    >>> t = AssetTagger({"BTC": AssetEntry(names=("bitcoin",)), "SOL": AssetEntry(cased=("SOL",))})
    >>> t.tag("Bitcoin's rally; sol y playa"), t.tag("Bitcoin hits $SOL", provided=["sol", "XYZ"])
    (('BTC',), ('BTC', 'SOL'))
    """

    def __init__(self, table: Mapping[str, AssetEntry]):
        self.table: dict[str, AssetEntry] = {}
        insens: dict[str, str | None] = {}
        cased: dict[str, str] = {}
        cash: dict[str, str] = {}

        def put(d: dict, key: str, code: str | None, what: str) -> None:
            if key in d and d[key] != code:
                raise UserError(f"asset alias {what!r} is given to both {d[key] or 'stop'} and {code or 'stop'}",
                                "keep each alias under one asset in S3/assets.yaml / assets.extra_file")
            d[key] = code

        for code, entry in sorted(table.items()):
            code = str(code).upper()
            if not _CODE.match(code):
                raise UserError(f"asset code {code!r} is not valid", "use a base asset code such as BTC or 1INCH")
            entry = entry if isinstance(entry, AssetEntry) else AssetEntry.model_validate(entry)
            self.table[code] = entry
            put(cash, code, code, f"${code}")
            for t in entry.cashtags:
                put(cash, t, code, f"${t}")
            for n in entry.names:
                put(insens, _norm(n), code, n)
            for c in entry.cased:
                put(cased, c, code, c)
        stop_owner: dict[str, set[str]] = {}
        for code, entry in self.table.items():   # stop phrases last: an alias of another asset wins
            for s in entry.stop:
                stop_owner.setdefault(_norm(s), set()).add(code)
                if insens.get(_norm(s)) is None:
                    insens[_norm(s)] = None
        for c, code in cased.items():
            if insens.get(_norm(c), code) != code:
                raise UserError(f"cased alias {c!r} of {code} is also a name of {insens[_norm(c)]}",
                                "keep each alias under one asset")
        self._insens, self._cased, self._cash, self._stop_owner = insens, cased, cash, stop_owner
        alts = [(len(p), f"(?i:{_pattern(p)})") for p in insens] + [(len(p), _pattern(p)) for p in cased]
        alts.sort(key=lambda x: -x[0])
        body = "|".join(a for _, a in alts) or r"(?!x)x"
        self._regex = re.compile(rf"(?<![\w$])(?:{body})(?!\w)")
        self._shout_exempt = {c for c in cased} | set(cash)

    # -------------------------------------------------------------- tagging
    @property
    def assets(self) -> tuple[str, ...]:
        return tuple(self.table)

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 (16 hex) of the dictionary: recorded with the series it tagged."""
        blob = json.dumps({k: v.model_dump() for k, v in self.table.items()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def shouting(self, text: str) -> bool:
        """ALL-CAPS text (≥ 3 words besides the tickers, ≥ 80 % upper case): cased aliases
        such as SOL or NEAR are then ordinary words and do not count."""
        words = [w for w in _WORD.findall(text) if w not in self._shout_exempt]
        return len(words) >= 3 and sum(w.isupper() for w in words) >= 0.8 * len(words)

    def tag(self, text: str, *, provided: Iterable[str] = ()) -> tuple[str, ...]:
        """Sorted asset codes ``text`` is about; ``provided``: codes a source already
        attached (e.g. CryptoPanic currencies), kept when they are known assets."""
        text = text if isinstance(text, str) else ""
        found = {self._cash[p] for p in (str(x).strip().lstrip("$").upper() for x in provided) if p in self._cash}
        found |= {self._cash[m.group(1).upper()] for m in _CASHTAG.finditer(text) if m.group(1).upper() in self._cash}
        shout = None
        vetoed: set[str] = set()
        cased_hits: set[str] = set()
        for m in self._regex.finditer(text):
            hit = m.group(0)
            key = _norm(hit)
            if key in self._insens:
                code = self._insens[key]
                if code is None:
                    vetoed |= self._stop_owner.get(key, set())
                else:
                    found.add(code)
            else:
                code = self._cased.get(" ".join(hit.split()))
                if code is not None:
                    shout = self.shouting(text) if shout is None else shout
                    if not shout:
                        cased_hits.add(code)
        return tuple(sorted(found | (cased_hits - vetoed)))

    def tag_texts(self, texts: Iterable[str]) -> list[str]:
        """``"BTC,ETH"`` strings (``""`` for none), one per text."""
        return [",".join(self.tag(t)) for t in texts]

    def tag_items(self, items: pd.DataFrame) -> pd.Series:
        """Tags of a news-items frame from its ``title`` and ``summary``."""
        title = items["title"].fillna("").astype(str) if "title" in items else pd.Series("", index=items.index)
        summary = items["summary"].fillna("").astype(str) if "summary" in items else ""
        texts = (title + " " + summary) if isinstance(summary, pd.Series) else title
        return pd.Series(self.tag_texts(texts.tolist()), index=items.index, dtype=object).astype(str)


def has_asset(tags: pd.Series, asset: str) -> np.ndarray:
    """Boolean mask of the rows whose comma-separated ``tags`` contain ``asset``.

    >>> has_asset(pd.Series(["BTC,ETH", "ETHW", ""]), "ETH").tolist()
    [True, False, False]
    """
    a = f",{str(asset).upper()},"
    return ("," + tags.fillna("").astype(str) + ",").str.contains(a, regex=False).to_numpy(dtype=bool)


def tag_counts(tags: pd.Series) -> dict[str, int]:
    """``{asset: number of rows tagged with it}``, largest first."""
    s = tags.fillna("").astype(str)
    exploded = s[s != ""].str.split(",").explode()
    return {str(k): int(v) for k, v in exploded.value_counts().items()}


# ------------------------------------------------------------------ loading
def _read_table(path: Path) -> dict[str, AssetEntry]:
    raw = load_file(path, what="asset alias file",
                    fix="fix assets.extra_file in S3/sentiment.yaml (a YAML laid out like S3/assets.yaml)") or {}
    if not isinstance(raw, dict):
        raise UserError(f"{path} must map asset codes to aliases", "see S3/assets.yaml for the layout")
    out = {}
    for code, entry in raw.items():
        try:
            out[str(code).upper()] = AssetEntry.model_validate(entry or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise UserError(f"{path}: {code}.{where}: {first['msg']}",
                            "each asset takes names / cased / cashtags / stop lists (see S3/assets.yaml)") from exc
    return out


def merge_tables(base: Mapping[str, AssetEntry], extra: Mapping[str, AssetEntry]) -> dict[str, AssetEntry]:
    """``extra``'s lists appended to ``base``'s (new assets added)."""
    out = dict(base)
    for code, e in extra.items():
        b = out.get(code)
        if b is None:
            out[code] = e
        else:
            out[code] = AssetEntry(**{f: tuple(dict.fromkeys((*getattr(b, f), *getattr(e, f))))
                                      for f in ("names", "cased", "cashtags", "stop")})
    return out


@functools.lru_cache(maxsize=8)
def _load(extra: str, mtime: float) -> AssetTagger:
    table = _read_table(DEFAULT_ASSETS)
    if extra:
        table = merge_tables(table, _read_table(Path(extra)))
    return AssetTagger(table)


def load_tagger(extra_file: str | Path | None = None) -> AssetTagger:
    """The shipped dictionary, plus ``extra_file`` (same layout) when given."""
    extra = str(extra_file) if extra_file else ""
    mtime = Path(extra).stat().st_mtime if extra and Path(extra).exists() else 0.0
    return _load(extra, mtime)


def default_tagger() -> AssetTagger:
    return load_tagger(None)
