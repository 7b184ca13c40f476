"""Where the data directory lives: a local folder (``pathlib.Path``, as always) or an
S3-compatible bucket (``DATA_DIR=s3://bucket/prefix``, e.g. a MinIO server) through ``s3fs``.

:func:`as_path` turns a data path (str or path) into a :class:`pathlib.Path` for a local
folder -- nothing else is imported or changed on that path -- or into an :class:`S3Path` for
``s3://...``: a small path object with the pathlib operations the toolkit uses on data paths
(``/``, ``name``, ``stem``, ``suffix``, ``parent``, ``parts``, ``exists``, ``is_file``, ``is_dir``,
``glob``, ``iterdir``, ``stat``, ``read_bytes``, ``read_text``, ``write_bytes``, ``write_text``,
``unlink``, ``mkdir`` -- a no-op, object stores have no folders).

Writes are atomic the way object stores are: :meth:`S3Path.write_bytes` sends the whole object in
one request (a single PUT up to 100 MiB, above that one multipart upload of 50 MiB parts, whose
completion is atomic), so a reader sees the previous object or the new one, never a partial one;
a writer killed mid-upload leaves the previous object as it was. ``S3Path`` has no ``__fspath__``
on purpose: ``open(p)`` or ``Path(p)`` on it fails loudly rather than writing a local file named
``s3:/...``.

The endpoint, keys and region come from settings (``S3_ENDPOINT_URL``, ``S3_ACCESS_KEY_ID``,
``S3_SECRET_ACCESS_KEY``, ``S3_REGION``). ``s3fs`` is imported on first use of a bucket only.

>>> p = as_path("s3://bucket/data") / "btcusdt_1h_30d.parquet"
>>> str(p), p.name, p.stem, p.suffix, str(p.parent)
('s3://bucket/data/btcusdt_1h_30d.parquet', 'btcusdt_1h_30d.parquet', 'btcusdt_1h_30d', '.parquet', 's3://bucket/data')
>>> as_path("data").as_posix(), is_remote("s3://b/x"), is_remote("data")
('data', True, False)
"""

from __future__ import annotations

import fnmatch
import functools
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from S1.errors import UserError

SCHEME = "s3://"


def is_remote(path: Any) -> bool:
    """True for an :class:`S3Path` or an ``s3://`` string (cheap: no import)."""
    return isinstance(path, S3Path) or (isinstance(path, str) and path.startswith(SCHEME))


def as_path(path: Any) -> Path | "S3Path":
    """``s3://...`` (str or :class:`S3Path`) -> :class:`S3Path`; anything else -> ``Path``."""
    if isinstance(path, S3Path):
        return path
    if isinstance(path, str) and path.startswith(SCHEME):
        return S3Path(path)
    return Path(path)


def _store_op(fn):
    """A bucket that cannot be reached (no server, bad endpoint, bad credentials setup) is one
    :class:`UserError` naming the endpoint, not a botocore traceback."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kw):
        try:
            return fn(self, *args, **kw)
        except (OSError, UserError, ValueError, TypeError):
            raise
        except Exception as exc:
            try:
                from botocore.exceptions import BotoCoreError
            except ImportError:  # pragma: no cover - s3fs always brings botocore
                raise exc from None
            if not isinstance(exc, BotoCoreError):
                raise
            from S1.settings import get_settings

            where = get_settings().s3_endpoint_url or "AWS S3"
            raise UserError(f"cannot reach {self} at {where} ({str(exc).splitlines()[0]})",
                            "check S3_ENDPOINT_URL, S3_REGION and that the S3 server is running") from None

    return wrapper


@dataclass(frozen=True)
class S3Stat:
    st_size: int
    st_mtime: float

    @property
    def st_mtime_ns(self) -> int:
        """As ``os.stat_result.st_mtime_ns`` (readers key caches on it, e.g. the S7 dashboard)."""
        return int(round(self.st_mtime * 1e9))


class S3Path:
    """An object key (or prefix) in a bucket, with the pathlib operations data paths need."""

    __slots__ = ("_key",)

    def __init__(self, url: str | "S3Path"):
        if isinstance(url, S3Path):
            self._key = url._key
            return
        s = str(url)
        if not s.startswith(SCHEME):
            raise ValueError(f"not an s3:// URL: {s!r}")
        key = PurePosixPath(s[len(SCHEME):].strip("/") or ".")
        if not key.parts or key.parts[0] in (".", ".."):
            raise UserError(f"{s!r} names no bucket", "use DATA_DIR=s3://<bucket>[/<prefix>]")
        self._key = key

    @classmethod
    def _of(cls, key: PurePosixPath) -> "S3Path":
        out = cls.__new__(cls)
        out._key = key
        return out

    # -------------------------------------------------------------- pure path parts
    @property
    def key(self) -> str:
        """``bucket/prefix/name`` (what s3fs takes)."""
        return self._key.as_posix()

    @property
    def bucket(self) -> str:
        return self._key.parts[0]

    def __str__(self) -> str:
        return SCHEME + self.key

    def as_posix(self) -> str:
        return str(self)

    def as_uri(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"S3Path({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, S3Path) and other._key == self._key

    def __hash__(self) -> int:
        return hash(("s3", self._key))

    def __lt__(self, other: "S3Path") -> bool:
        return self._key < other._key

    def __truediv__(self, other) -> "S3Path":
        return self._of(self._key / str(other))

    def joinpath(self, *others) -> "S3Path":
        return self._of(self._key.joinpath(*map(str, others)))

    @property
    def name(self) -> str:
        return self._key.name

    @property
    def stem(self) -> str:
        return self._key.stem

    @property
    def suffix(self) -> str:
        return self._key.suffix

    @property
    def suffixes(self) -> list[str]:
        return self._key.suffixes

    @property
    def parts(self) -> tuple[str, ...]:
        return ("s3://",) + self._key.parts

    @property
    def parent(self) -> "S3Path":
        return self._of(self._key.parent) if len(self._key.parts) > 1 else self

    @property
    def parents(self) -> tuple["S3Path", ...]:
        return tuple(self._of(k) for k in self._key.parents if k.parts)

    def with_name(self, name: str) -> "S3Path":
        return self._of(self._key.with_name(name))

    def with_suffix(self, suffix: str) -> "S3Path":
        return self._of(self._key.with_suffix(suffix))

    def relative_to(self, other: "S3Path") -> PurePosixPath:
        return self._key.relative_to(S3Path(other)._key)

    def is_absolute(self) -> bool:
        return True

    def resolve(self, strict: bool = False) -> "S3Path":
        return self

    def expanduser(self) -> "S3Path":
        return self

    # ------------------------------------------------------------------- the store
    @property
    def fs(self):
        return s3_filesystem()

    @_store_op
    def exists(self) -> bool:
        return self.fs.exists(self.key)

    @_store_op
    def is_file(self) -> bool:
        return self.fs.isfile(self.key)

    @_store_op
    def is_dir(self) -> bool:
        return self.fs.isdir(self.key)

    def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: a prefix exists as soon as an object is written under it."""

    @_store_op
    def stat(self) -> S3Stat:
        try:
            info = self.fs.info(self.key)
        except FileNotFoundError:
            raise FileNotFoundError(2, "no such object", str(self)) from None
        mtime = info.get("LastModified")
        return S3Stat(int(info.get("size") or 0), mtime.timestamp() if hasattr(mtime, "timestamp") else 0.0)

    @_store_op
    def iterdir(self) -> Iterator["S3Path"]:
        try:
            names = self.fs.ls(self.key, detail=False)
        except FileNotFoundError:
            return iter(())
        return iter(sorted(self._of(PurePosixPath(n)) for n in names if n.rstrip("/") != self.key))

    def glob(self, pattern: str) -> Iterator["S3Path"]:
        """Matches of a relative ``pattern`` of ``*``/``?``/``[]`` parts (no ``**``), files and prefixes."""
        if "**" in pattern:
            raise ValueError("S3Path.glob: '**' is not supported")
        found = [self]
        for part in PurePosixPath(pattern).parts:
            nxt = []
            for base in found:
                if any(c in part for c in "*?["):
                    nxt.extend(p for p in base.iterdir() if fnmatch.fnmatchcase(p.name, part))
                else:
                    child = base / part
                    if child.exists():
                        nxt.append(child)
            found = nxt
        return iter(sorted(found))

    @_store_op
    def rglob(self, pattern: str) -> Iterator["S3Path"]:
        keys = self.fs.find(self.key)
        return iter(sorted(self._of(PurePosixPath(k)) for k in keys
                           if fnmatch.fnmatchcase(PurePosixPath(k).name, pattern)))

    @_store_op
    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.key)

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    @_store_op
    def write_bytes(self, data: bytes) -> int:
        """The whole object in one request (single PUT, or one multipart upload completed at
        the end): never a partial object under this key."""
        self.fs.pipe_file(self.key, bytes(data))
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    @_store_op
    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    @_store_op
    def open(self, mode: str = "rb", **kw):
        """Read only: writes go through :meth:`write_bytes` (one atomic request)."""
        if mode not in ("r", "rb"):
            raise ValueError("S3Path.open is read-only; write with write_bytes / S1.datasets.atomic_write_*")
        fh = self.fs.open(self.key, "rb")
        if mode == "r":
            import io

            return io.TextIOWrapper(fh, encoding=kw.get("encoding") or "utf-8")
        return fh


# ------------------------------------------------------------------------ the client
def s3_options(settings=None) -> dict[str, Any]:
    """The s3fs keyword arguments from settings (endpoint, keys, region; path-style addressing)."""
    if settings is None:
        from S1.settings import get_settings

        settings = get_settings()
    key = settings.s3_access_key_id
    secret = settings.s3_secret_access_key
    client: dict[str, Any] = {}
    if settings.s3_region:
        client["region_name"] = settings.s3_region
    opts: dict[str, Any] = {
        "key": key or None,
        "secret": secret.get_secret_value() if secret is not None else None,
        "client_kwargs": client,
        # listings are not cached: another process may have written since (correctness first)
        "use_listings_cache": False,
        "skip_instance_cache": True,
        "config_kwargs": {"s3": {"addressing_style": "path"}},
    }
    if settings.s3_endpoint_url:
        opts["endpoint_url"] = settings.s3_endpoint_url
    return opts


@lru_cache(maxsize=4)
def _filesystem(frozen: tuple):
    try:
        import s3fs
    except ImportError:
        raise UserError("DATA_DIR is an s3:// URL but the s3fs package is not installed",
                        "pip install -r requirements.txt (it lists s3fs), or point DATA_DIR at a local folder"
                        ) from None
    opts = dict(frozen)
    opts.pop("_pid", None)
    opts["client_kwargs"] = dict(opts["client_kwargs"])
    opts["config_kwargs"] = {"s3": dict(opts["config_kwargs"])}
    return s3fs.S3FileSystem(**opts)


def s3_filesystem(settings=None):
    """The ``s3fs.S3FileSystem`` of the settings (one per distinct configuration and process)."""
    opts = s3_options(settings)
    frozen = tuple(sorted((k, tuple(sorted(v.items())) if k == "client_kwargs" else
                           tuple(sorted(v["s3"].items())) if k == "config_kwargs" else v)
                          for k, v in opts.items()))
    return _filesystem(frozen + (("_pid", os.getpid()),))


def clear_cache() -> None:
    """Forget the clients (tests that change the S3 settings call it with ``get_settings.cache_clear()``)."""
    _filesystem.cache_clear()


def duckdb_secret_sql(settings=None, *, name: str = "toolkit_s3") -> str:
    """``CREATE SECRET`` for DuckDB's httpfs from the same settings (path-style URLs; no SSL for
    an ``http://`` endpoint)."""
    if settings is None:
        from S1.settings import get_settings

        settings = get_settings()

    def lit(v: str) -> str:
        return "'" + str(v).replace("'", "''") + "'"

    parts = ["TYPE s3", "URL_STYLE 'path'"]
    if settings.s3_access_key_id:
        parts.append(f"KEY_ID {lit(settings.s3_access_key_id)}")
    if settings.s3_secret_access_key is not None:
        parts.append(f"SECRET {lit(settings.s3_secret_access_key.get_secret_value())}")
    if settings.s3_region:
        parts.append(f"REGION {lit(settings.s3_region)}")
    url = settings.s3_endpoint_url
    if url:
        host = url.split("://", 1)[-1].rstrip("/")
        parts.append(f"ENDPOINT {lit(host)}")
        parts.append(f"USE_SSL {'false' if url.startswith('http://') else 'true'}")
    return f"CREATE OR REPLACE SECRET {name} ({', '.join(parts)})"
