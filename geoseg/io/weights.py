"""Published weight files: the local cache and the one download that fills it.

The only network I/O of the model side. A file is downloaded once, to a temporary name next
to its cache entry, checked against the hash prefix its publisher put in its name (the
``<name>-<first hex digits of its sha256>.pth`` convention of torchvision and torchgeo), and
only then renamed into place, so the cache never holds a partial or altered file.

Where: ``$GEOSEG_CACHE/weights`` (default ``~/.cache/geoseg/weights``). A cluster without
internet access can serve the same file names from its own web server: ``GEOSEG_WEIGHTS_MIRROR``
replaces each publisher's address with that base URL.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from geoseg.errors import CheckpointError

__all__ = ["MIRROR_ENV", "cache_dir", "cached_download", "hash_prefix"]

#: Environment variable: a base URL serving published weight files under their own names.
MIRROR_ENV = "GEOSEG_WEIGHTS_MIRROR"
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where downloaded weights are kept: ``$GEOSEG_CACHE/weights`` or ``~/.cache/geoseg/weights``."""
    root = os.environ.get("GEOSEG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "geoseg")
    return Path(root) / "weights"


def hash_prefix(file_name: str) -> str | None:
    """The sha256 prefix a published file name carries (``resnet18-f37072fd.pth`` -> ``f37072fd``).

    Examples
    --------
    >>> hash_prefix("resnet18_landsat_oli_sr_moco-660e82ed.pth"), hash_prefix("weights.pth")
    ('660e82ed', None)
    """
    m = re.search(r"-([0-9a-f]{8,64})\.[A-Za-z]+$", file_name)
    return m[1] if m else None


def cached_download(url: str, what: str, directory: Path | None = None, timeout: float = 60.0) -> Path:
    """The local copy of ``url``: from the cache, or downloaded into it and checked.

    Parameters
    ----------
    url : str
        The publisher's address; its last path part names the file (and carries its hash prefix).
    what : str
        The name the user asked for, for messages.
    directory : Path, optional
        The cache (default :func:`cache_dir`).

    Raises
    ------
    CheckpointError
        The network cannot be reached (the message says how to proceed offline), the server
        refused, or the file's sha256 differs from the prefix in its name.
    """
    name = Path(urlparse(url).path).name
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    source = f"{mirror.rstrip('/')}/{name}" if mirror else url
    folder = directory or cache_dir()
    dest = folder / name
    if dest.is_file():
        return dest
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"{folder}: cannot create the weights cache ({e.strerror}); set GEOSEG_CACHE to a "
                              f"writable folder") from None
    part = folder / f".{name}.{os.getpid()}.part"
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(source, timeout=timeout) as r, open(part, "wb") as f:
            while chunk := r.read(_CHUNK):
                digest.update(chunk)
                f.write(chunk)
    except urllib.error.HTTPError as e:
        part.unlink(missing_ok=True)
        raise CheckpointError(f"{what}: {source} answered {e.code} {e.reason}; check the address (or the mirror in "
                              f"{MIRROR_ENV}), or download the file elsewhere and pass its path") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise CheckpointError(
            f"{what}: cannot download {source} ({reason}); this machine may be offline - download the file on a "
            f"machine that is online and pass its path (--pretrained PATH --pretrained-bands ...), copy it into "
            f"{folder}, or set {MIRROR_ENV} to a server that holds it"
        ) from None
    except OSError as e:
        part.unlink(missing_ok=True)
        raise CheckpointError(f"{what}: cannot write {part} ({e.strerror}); free space there or set GEOSEG_CACHE "
                              f"to another folder") from None
    expected = hash_prefix(name)
    if expected and not digest.hexdigest().startswith(expected):
        part.unlink(missing_ok=True)
        raise CheckpointError(
            f"{what}: the file downloaded from {source} has sha256 {digest.hexdigest()[:16]}..., but its name says it "
            f"starts with {expected}; the download was damaged or the server holds another file - run again, or "
            f"check the mirror"
        )
    os.replace(part, dest)
    return dest
