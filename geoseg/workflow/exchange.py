"""Where a run's workers meet its run folder.

With a local ``runs_dir`` the workers share the run folder's disk with the client (one machine, or
a shared volume): they write and read its files where they are, and :class:`Exchange` changes
nothing. With ``runs_dir`` on object storage the run is worked in a local folder of the client's
and workers may share no disk with it, so the files they make or read pass through an exchange
folder of the run on the object store (``<run>/.exchange/``, the run folder's layout below it):

* a file a worker writes (a scene's mask COG, a part of the fields dataset) goes to
  :meth:`Exchange.out` and the client copies it into its folder with :meth:`Exchange.pull`;
* a file the client made that workers read (the mosaic, a stacked VRT, a season composite) is
  put there by :meth:`Exchange.shared`, which gives the path GDAL reads it at (``/vsis3/...``).

The exchange folder is deleted once the run's outputs are published (:meth:`Exchange.clear`).
"""

from __future__ import annotations

from pathlib import Path

from geoseg.errors import ObjectStoreError
from geoseg.io.objects import download_folder, join, object_prefix
from geoseg.io.paths import dataset_path

__all__ = ["EXCHANGE", "Exchange"]

#: The exchange folder inside a run folder on object storage.
EXCHANGE = ".exchange"


class Exchange:
    """The run folder ``root`` (local) as its workers see it; ``url`` is the run folder on object
    storage, None for a local runs folder."""

    def __init__(self, root: Path, url: str | None = None) -> None:
        self.root = root
        self.url = join(url, EXCHANGE) if url else None
        self._there: set[str] = set()  # files known to be in the exchange folder already

    @property
    def remote(self) -> bool:
        return self.url is not None

    def _rel(self, p: Path) -> str:
        return p.relative_to(self.root).as_posix()

    def out(self, p: Path) -> str:
        """Where a worker writes the run-folder file (or folder) ``p``: ``p`` itself, or its object URL."""
        return str(p) if self.url is None else join(self.url, self._rel(p))

    def pull(self, p: Path, *, missing_ok: bool = False) -> bool:
        """Copy the file a worker wrote for ``p`` into the run folder (nothing to do for a local
        runs folder); False when it is not there and ``missing_ok``."""
        if self.url is None:
            return p.exists()
        rel = self._rel(p)
        got = object_prefix(self.url).get_file(rel, p)
        if not got and not missing_ok:
            raise ObjectStoreError(f"{join(self.url, rel)}: the worker's file is missing; run again with --resume")
        if got:
            self._there.add(rel)
        return got

    def pull_folder(self, p: Path) -> int:
        """Copy every file workers wrote under the run-folder folder ``p`` into it; how many."""
        return 0 if self.url is None else download_folder(join(self.url, self._rel(p)), p)

    def shared(self, p: Path) -> Path | str:
        """The path workers read the run-folder file ``p`` at: ``p``, or the GDAL path of its copy in
        the exchange folder (put there unless a worker wrote it there)."""
        if self.url is None:
            return p
        rel = self._rel(p)
        if rel not in self._there:
            object_prefix(self.url).put(rel, p)
            self._there.add(rel)
        return dataset_path(join(self.url, rel))

    def forget(self, p: Path) -> None:
        """``p`` changed in the run folder: :meth:`shared` puts it again."""
        if self.url is not None:
            self._there.discard(self._rel(p))

    def clear(self) -> None:
        """Delete the exchange folder (its files are in the run folder now)."""
        if self.url is None:
            return
        prefix = object_prefix(self.url)
        prefix.delete([k for k, _ in prefix.listing()])
        self._there.clear()
