"""Folders that may be object-store prefixes (``s3://bucket/tiles``): the few operations the
tile store needs, the same on a local disk and on S3-compatible storage. Thin I/O.

An object store has no rename, so "write under a temporary name, then rename" becomes "put the
whole object": a reader sees all of it or nothing. What a rename also gave, exclusivity, comes
from conditional puts: :meth:`Prefix.put` with ``create=True`` refuses to replace an object
(``If-None-Match: *``), which is how a run claims its folder in a shared store.

Objects go through obstore (S3, Google Cloud Storage, Azure). Its S3 settings come from the
environment: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, and for a server
other than AWS ``AWS_ENDPOINT_URL`` (``AWS_ALLOW_HTTP=true`` for plain http); where only GDAL's
own ``AWS_S3_ENDPOINT`` / ``AWS_HTTPS=NO`` are set (the settings that let GDAL read the inputs),
the endpoint is taken from those, so one set of variables serves both.

>>> is_object_url("s3://bucket/tiles"), is_object_url("tiles")
(True, False)
>>> join("s3://bucket/tiles/", "demo", "r1"), join("tiles", "demo")
('s3://bucket/tiles/demo/r1', 'tiles/demo')
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from geoseg.errors import ObjectStoreError
from geoseg.io.raster import write_text_atomic

__all__ = ["OBJECT_SCHEMES", "Prefix", "cache_root", "download_folder", "is_object_url", "join", "local_copy", "object_prefix", "read_text",
           "readable_copy", "write_text", "written_to"]

#: URL schemes geoseg writes to as object stores.
OBJECT_SCHEMES = ("s3", "gs", "az", "abfs")

_ENV_HINT = ("check the address and the store's settings (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION; "
             "AWS_ENDPOINT_URL, or GDAL's AWS_S3_ENDPOINT, for a server other than AWS)")


def is_object_url(value: str | os.PathLike[str]) -> bool:
    """True for ``s3://``, ``gs://``, ``az://`` and ``abfs://`` URLs."""
    text = os.fspath(value)
    return "://" in text and text.split("://", 1)[0].lower() in OBJECT_SCHEMES


def join(root: str | os.PathLike[str], *parts: str) -> str:
    """``root`` and ``parts`` joined with ``/`` (an object URL) or as a local path."""
    if is_object_url(root):
        return "/".join([os.fspath(root).rstrip("/"), *(p.strip("/") for p in parts)])
    return os.fspath(Path(root, *parts))


def _s3_settings() -> tuple[dict[str, str], dict[str, bool]]:
    """S3 settings (store config, client options) GDAL users already have, for the ones obstore
    does not read itself."""
    if os.environ.get("AWS_ENDPOINT_URL") or not os.environ.get("AWS_S3_ENDPOINT"):
        return {}, {}
    endpoint = os.environ["AWS_S3_ENDPOINT"]
    if "://" not in endpoint:
        http = os.environ.get("AWS_HTTPS", "YES").upper() in ("NO", "FALSE", "0", "OFF")
        endpoint = f"{'http' if http else 'https'}://{endpoint}"
    return {"aws_endpoint": endpoint}, ({"allow_http": True} if endpoint.startswith("http://") else {})


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


class Prefix:
    """The objects under one URL prefix, by key relative to it."""

    def __init__(self, url: str) -> None:
        import obstore.store  # deferred: only runs that use an object store need it
        from obstore.exceptions import BaseError

        self.url = url.rstrip("/")
        scheme, rest = self.url.split("://", 1)
        bucket, _, self.prefix = rest.partition("/")
        config, options = _s3_settings() if scheme.lower() == "s3" else ({}, {})
        try:
            self._store = obstore.store.from_url(f"{scheme}://{bucket}", config=config or None,
                                                 client_options=options or None)
        except BaseError as e:  # a bad URL or configuration
            raise ObjectStoreError(f"{self.url}: cannot use this object store ({_first_line(e)}); {_ENV_HINT}") from None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def location(self, key: str) -> str:
        """The full URL of ``key`` (for messages)."""
        return f"{self.url}/{key}"

    def put(self, key: str, data: bytes | Path, *, create: bool = False, if_match: str | None = None) -> bool:
        """Store ``data`` (bytes, or a local file streamed) as ``key`` in one piece; with ``create``,
        only if ``key`` does not exist yet; with ``if_match``, only if ``key`` still has that ETag
        (:meth:`head`). Returns False when the condition fails, leaving the object as it was."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError

        mode: Any = "create" if create else {"e_tag": if_match} if if_match else "overwrite"
        try:
            obstore.put(self._store, self._key(key), data, mode=mode)
        except (AlreadyExistsError, PreconditionError):
            if create or if_match:
                return False
            raise
        except FileNotFoundError:  # an update of an object that is gone
            if if_match:
                return False
            raise
        except BaseError as e:
            raise ObjectStoreError(f"{self.location(key)}: writing failed ({_first_line(e)}); {_ENV_HINT}, then run "
                                   f"again with --resume") from None
        return True

    def head(self, key: str) -> str | None:
        """The ETag of ``key`` (what :meth:`put`'s ``if_match`` takes); None when there is no such object."""
        import obstore
        from obstore.exceptions import BaseError

        try:
            return str(obstore.head(self._store, self._key(key)).get("e_tag") or "")
        except FileNotFoundError:
            return None
        except BaseError as e:
            raise ObjectStoreError(f"{self.location(key)}: reading failed ({_first_line(e)}); {_ENV_HINT}") from None

    def get_file(self, key: str, dest: Path) -> bool:
        """Stream ``key`` into the local file ``dest`` (written under a temporary name, then renamed);
        False when there is no such object."""
        import obstore
        from obstore.exceptions import BaseError

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}-{threading.get_ident()}")
        try:
            with open(tmp, "wb") as f:
                f.writelines(obstore.get(self._store, self._key(key)).stream())
            os.replace(tmp, dest)
        except FileNotFoundError:
            return False
        except BaseError as e:
            raise ObjectStoreError(f"{self.location(key)}: reading failed ({_first_line(e)}); {_ENV_HINT}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def delete(self, keys: list[str]) -> None:
        """Delete ``keys`` (missing ones are no error)."""
        import obstore
        from obstore.exceptions import BaseError

        try:
            if keys:
                obstore.delete(self._store, [self._key(k) for k in keys])
        except FileNotFoundError:
            pass
        except BaseError as e:
            raise ObjectStoreError(f"{self.url}: deleting failed ({_first_line(e)}); {_ENV_HINT}") from None

    def get(self, key: str) -> bytes | None:
        """The bytes of ``key``; None when there is no such object."""
        import obstore
        from obstore.exceptions import BaseError

        try:
            return bytes(obstore.get(self._store, self._key(key)).bytes())
        except FileNotFoundError:
            return None
        except BaseError as e:
            raise ObjectStoreError(f"{self.location(key)}: reading failed ({_first_line(e)}); {_ENV_HINT}") from None

    def listing(self) -> list[tuple[str, str]]:
        """``(key, version)`` of every object under the prefix (the version: its ETag, or size and time)."""
        import obstore
        from obstore.exceptions import BaseError

        out = []
        try:
            for batch in obstore.list(self._store, prefix=self.prefix or None):
                for meta in batch:
                    key = str(meta["path"])[len(self.prefix) + 1 if self.prefix else 0:]
                    out.append((key, str(meta.get("e_tag") or f"{meta['size']}@{meta['last_modified']}")))
        except BaseError as e:
            raise ObjectStoreError(f"{self.url}: listing failed ({_first_line(e)}); {_ENV_HINT}") from None
        return sorted(out)

    def folders(self) -> list[str]:
        """The names of the folders directly under the prefix (one listing call with a delimiter:
        nothing below them is listed)."""
        import obstore
        from obstore.exceptions import BaseError

        try:
            found = obstore.list_with_delimiter(self._store, prefix=self.prefix or None)["common_prefixes"]
        except BaseError as e:
            raise ObjectStoreError(f"{self.url}: listing failed ({_first_line(e)}); {_ENV_HINT}") from None
        return sorted(str(f).rstrip("/").rsplit("/", 1)[-1] for f in found)


def cache_root() -> Path:
    """Where object-store folders are copied to (``GEOSEG_CACHE``, else ``~/.cache/geoseg``)."""
    return Path(os.environ.get("GEOSEG_CACHE") or Path.home() / ".cache" / "geoseg").expanduser()


def local_copy(url: str, what: str = "folder") -> Path:
    """A local copy of every object under ``url`` (e.g. a model directory on S3), made once per machine.

    The copy's folder is named by a hash of the URL and of every object's key and version, so a
    changed object gives a new copy; it is downloaded into a temporary folder and renamed into
    place whole, so processes on one machine that copy at once each end with a complete copy.

    Raises
    ------
    ObjectStoreError
        Nothing under ``url``, or the store cannot be read.
    """
    import hashlib
    import shutil
    import uuid

    prefix = object_prefix(url)
    listing = prefix.listing()
    if not listing:
        raise ObjectStoreError(f"{prefix.url}: no objects under this {what}; check the URL (e.g. s3://bucket/models/"
                               f"rice-v3, the folder that holds model.json)")
    digest = hashlib.sha256(repr((prefix.url, listing)).encode()).hexdigest()[:20]
    dest = cache_root() / "objects" / digest
    if dest.is_dir():
        return dest
    tmp = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex[:12]}")
    try:
        for key, _ in listing:  # streamed: a model's weights never sit whole in memory
            if not prefix.get_file(key, tmp / key):
                raise ObjectStoreError(f"{prefix.location(key)}: disappeared while being copied; run again")
        try:
            os.replace(tmp, dest)
        except OSError:
            if not dest.is_dir():  # another process published the same copy first: keep that one
                raise
    except ObjectStoreError:
        raise
    except OSError as e:
        raise ObjectStoreError(f"{dest}: copying {prefix.url} here failed ({e.strerror or e}); free disk space or "
                               f"set GEOSEG_CACHE to a writable folder") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def object_prefix(url: str) -> Prefix:
    """The :class:`Prefix` of an object URL."""
    return Prefix(url)


def write_text(folder: str | os.PathLike[str], name: str, text: str) -> None:
    """``text`` as ``name`` in ``folder``: a local folder (created if needed; written atomically) or an
    object prefix."""
    if is_object_url(folder):
        object_prefix(os.fspath(folder)).put(name, text.encode("utf-8"))
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(folder, name), text)


def read_text(folder: str | os.PathLike[str], name: str) -> str | None:
    """The text of ``name`` in ``folder`` (local or an object prefix); None when it does not exist."""
    if is_object_url(folder):
        data = object_prefix(os.fspath(folder)).get(name)
        return None if data is None else data.decode("utf-8", errors="replace")
    try:
        return Path(folder, name).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None


@contextmanager
def written_to(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A local path to write the file ``target`` at: ``target`` itself when it is local (the writer
    publishes it as it always does), else a path in a temporary folder whose files - the file and
    what its writer put beside it (a raster's ``.aux.xml``, ``.qml``) - are put under ``target``'s
    folder when the block ends without an error (a worker without the client's disk writes this way)."""
    if not is_object_url(target):
        yield Path(target)
        return
    with _scratch(target, "put") as (prefix, local):
        yield local
        for f in sorted(local.parent.rglob("*")):
            if f.is_file() and ".partial-" not in f.name:
                prefix.put(f.relative_to(local.parent).as_posix(), f)


@contextmanager
def readable_copy(source: str | os.PathLike[str]) -> Iterator[Path]:
    """A local path to read the file ``source`` at: ``source`` itself when it is local, else a
    temporary copy of the object, deleted when the block ends."""
    if not is_object_url(source):
        yield Path(source)
        return
    with _scratch(source, "get") as (prefix, local):
        if not prefix.get_file(local.name, local):
            raise ObjectStoreError(f"{os.fspath(source)}: no such object; the run's earlier stage did not write it - "
                                   f"run again with --resume")
        yield local


@contextmanager
def _scratch(url: str | os.PathLike[str], what: str) -> Iterator[tuple[Prefix, Path]]:
    """The :class:`Prefix` of the object ``url``'s folder, and a path of the object's name in a
    temporary folder (``GEOSEG_TMP``, else the system's), removed with everything in it on exit."""
    folder, _, name = os.fspath(url).rpartition("/")
    with tempfile.TemporaryDirectory(prefix=f"geoseg-{what}-", dir=os.environ.get("GEOSEG_TMP")) as tmp:
        yield object_prefix(folder), Path(tmp, name)


def download_folder(url: str, dest: Path) -> int:
    """Every object under ``url`` into the local folder ``dest`` (created), each streamed to a
    temporary name and renamed; returns how many."""
    prefix = object_prefix(url)
    count = 0
    for key, _ in prefix.listing():
        if prefix.get_file(key, dest / key):
            count += 1
    return count
