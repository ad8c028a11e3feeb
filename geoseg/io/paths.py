"""Dataset paths as GDAL users write them: local files, URLs, GDAL virtual paths and standard output.

One normalisation at the edge (the command line, the library functions that take paths):

* **inputs** (:func:`dataset_path`): a local file stays a :class:`~pathlib.Path`; a URL
  (``https://``, ``http://``, ``ftp://``), a cloud object (``s3://``, ``gs://``, ``az://``)
  or a GDAL virtual path (``/vsicurl/...``, ``/vsis3/...``, ``/vsizip/...``) becomes the
  string GDAL opens (``s3://b/k`` -> ``/vsis3/b/k``, ``https://h/f`` -> ``/vsicurl/https://h/f``).
  A string, because :class:`~pathlib.Path` folds ``https://h`` into ``https:/h``.
  Credentials and endpoints come from GDAL's own settings (``AWS_*``, ``GDAL_HTTP_*``),
  through the environment or :class:`rasterio.Env`.
* **local-only paths** (:func:`local_path`): a folder or a file geoseg opens itself (a
  checkpoint, a class file, a run folder) refuses a remote path with the fix.
* **outputs** (:func:`output_path`): ``-`` (or ``/vsistdout/``) means standard output, for the
  formats that stream; any other URL or ``/vsi*`` path is refused - geoseg writes local files
  (atomically) and never a file named after a virtual path.

Examples
--------
>>> dataset_path("s3://bucket/scenes/t43.tif")
'/vsis3/bucket/scenes/t43.tif'
>>> dataset_path("https://example.com/mask.tif")
'/vsicurl/https://example.com/mask.tif'
>>> dataset_path("/vsicurl/https://example.com/mask.tif")
'/vsicurl/https://example.com/mask.tif'
>>> dataset_path("data/scene.tif")
PosixPath('data/scene.tif')
>>> output_path("-")
'-'
"""

from __future__ import annotations

import os
from pathlib import Path

from geoseg.errors import ConfigError

__all__ = [
    "STDOUT",
    "DatasetPath",
    "dataset_path",
    "is_remote",
    "local_path",
    "output_path",
    "refuse_stdout",
    "check_overwrite",
]

#: An input GDAL opens: a local :class:`Path`, or a ``/vsi...`` string for anything remote or virtual.
DatasetPath = Path | str

#: The output that means standard output.
STDOUT = "-"

#: URL schemes and the GDAL virtual file system that reads each.
_SCHEMES = {
    "http": "/vsicurl/", "https": "/vsicurl/", "ftp": "/vsicurl/",
    "s3": "/vsis3/", "gs": "/vsigs/", "gcs": "/vsigs/", "az": "/vsiaz/", "azure": "/vsiaz/", "abfs": "/vsiadls/",
}
_STDOUT_NAMES = ("-", "/vsistdout", "/vsistdout/")


def _scheme(text: str) -> str | None:
    head, sep, _ = text.partition("://")
    return head.lower() if sep and head.isascii() and head.replace("+", "").isalnum() else None


def is_remote(value: str | os.PathLike[str]) -> bool:
    """True for a URL, a cloud object or a GDAL virtual path (``/vsi...``), False for a local file.

    >>> is_remote("s3://b/k.tif"), is_remote("/vsicurl/http://h/k.tif"), is_remote("k.tif")
    (True, True, False)
    """
    text = os.fspath(value)
    return text.startswith("/vsi") or (_scheme(text) not in (None, "file"))


def dataset_path(value: str | os.PathLike[str]) -> DatasetPath:
    """The path GDAL (rasterio, pyogrio) opens for ``value``: a :class:`Path` for a local file,
    the ``/vsi...`` string for a URL, a cloud object or a GDAL virtual path.

    Raises
    ------
    ConfigError
        A URL scheme GDAL has no virtual file system for (e.g. ``sftp://``).

    Examples
    --------
    >>> dataset_path("file:///data/mask.tif")
    PosixPath('/data/mask.tif')
    >>> dataset_path("gs://b/k.tif")
    '/vsigs/b/k.tif'
    >>> dataset_path("sftp://h/k.tif")
    Traceback (most recent call last):
    ...
    geoseg.errors.ConfigError: sftp://h/k.tif: GDAL reads no 'sftp://' URLs; expected a local file, http(s)://, ftp://, s3://, gs://, az:// or a GDAL virtual path (/vsicurl/, /vsis3/, ...) - download it first, or give one of those
    """
    if isinstance(value, Path):
        return value
    text = os.fspath(value)
    if text.startswith("/vsi"):
        return text
    scheme = _scheme(text)
    if scheme is None:
        return Path(text)
    if scheme == "file":
        return Path(text[len("file://"):])
    vsi = _SCHEMES.get(scheme)
    if vsi is None:
        raise ConfigError(
            f"{text}: GDAL reads no {scheme + '://'!r} URLs; expected a local file, http(s)://, ftp://, s3://, gs://, "
            f"az:// or a GDAL virtual path (/vsicurl/, /vsis3/, ...) - download it first, or give one of those"
        )
    return vsi + (text if vsi == "/vsicurl/" else text.split("://", 1)[1])


def local_path(value: str | os.PathLike[str], what: str) -> Path:
    """``value`` as a local :class:`Path`, refusing a URL or a GDAL virtual path.

    ``what`` names the thing in the message ("the checkpoint directory", ...).

    Raises
    ------
    ConfigError
        A remote or virtual path.

    >>> local_path("https://h/models/punjab", "the checkpoint directory")
    Traceback (most recent call last):
    ...
    geoseg.errors.ConfigError: https://h/models/punjab: the checkpoint directory must be a local path, not a URL, a GDAL virtual path or standard output; give a local file or folder (download a remote one first, e.g. `aws s3 cp --recursive`, `curl -O`)
    """
    if is_remote(value) or os.fspath(value) in _STDOUT_NAMES:
        raise ConfigError(
            f"{os.fspath(value)}: {what} must be a local path, not a URL, a GDAL virtual path or standard output; "
            f"give a local file or folder (download a remote one first, e.g. `aws s3 cp --recursive`, `curl -O`)"
        )
    return Path(value)


def output_path(value: str | os.PathLike[str]) -> Path | str:
    """An output as given: :data:`STDOUT` (``"-"``) for ``-`` or ``/vsistdout/``, else a local :class:`Path`.

    Whether the format can stream to standard output is the writer's to say (:func:`refuse_stdout`).

    Raises
    ------
    ConfigError
        A URL or another GDAL virtual path: geoseg writes local files only.

    >>> output_path("/vsistdout/")
    '-'
    >>> output_path("/vsis3/b/fields.gpkg")
    Traceback (most recent call last):
    ...
    geoseg.errors.ConfigError: /vsis3/b/fields.gpkg: geoseg writes outputs to local files (each written whole, then renamed into place), not to URLs or GDAL virtual paths; write a local file and copy it (e.g. `aws s3 cp`), or give - for standard output where the format streams
    """
    text = os.fspath(value)
    if text in _STDOUT_NAMES:
        return STDOUT
    if is_remote(text):
        raise ConfigError(
            f"{text}: geoseg writes outputs to local files (each written whole, then renamed into place), not to "
            f"URLs or GDAL virtual paths; write a local file and copy it (e.g. `aws s3 cp`), or give - for standard "
            f"output where the format streams"
        )
    return Path(text)


def refuse_stdout(value: str | os.PathLike[str] | None, fmt: str, why: str, fix: str) -> None:
    """Raise for standard output (``-``) where ``fmt`` cannot stream, saying ``why`` and the ``fix``.

    >>> refuse_stdout("-", "a COG", "its header and overviews are written after the pixels", "--out mask.tif")
    Traceback (most recent call last):
    ...
    geoseg.errors.ConfigError: -: a COG cannot be written to standard output (its header and overviews are written after the pixels); write a file instead, e.g. --out mask.tif
    """
    if value is not None and os.fspath(value) in _STDOUT_NAMES:
        raise ConfigError(f"-: {fmt} cannot be written to standard output ({why}); write a file instead, e.g. {fix}")


def check_overwrite(path: str | os.PathLike[str] | None, overwrite: bool, what: str = "the output") -> None:
    """Refuse to replace an existing ``path`` unless ``overwrite`` (as ``rio`` does without ``--overwrite``).

    Standard output and ``None`` pass.

    Raises
    ------
    ConfigError
        ``path`` exists and ``overwrite`` is false.
    """
    if path is None or overwrite or os.fspath(path) in _STDOUT_NAMES:
        return
    if os.path.lexists(path):
        raise ConfigError(f"{os.fspath(path)}: {what} already exists; pass --overwrite to replace it, "
                          f"or name a new output")
