"""Run records: the run lock, ``manifest.json`` and the SQLite run catalog."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GeosegError
from ..io import write_text_atomic

__all__ = ["RunLockedError", "RunDirError", "RunLock", "write_manifest", "read_manifest", "Catalog"]


class RunLockedError(GeosegError, RuntimeError):
    """Another live process is running the same workflow."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDirError(GeosegError, OSError):
    """The runs folder cannot be created or written."""


class RunLock:
    """An exclusive lock file for one workflow's runs (``runs/<name>/.lock``).

    The file holds the owner's host and pid. A lock left by a process that no longer
    exists on this host is stale and is taken over (``stale_taken`` records that).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.stale_taken: dict[str, Any] | None = None
        self._held = False

    def acquire(self) -> "RunLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            probe = self.path.parent / f".write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as e:
            raise RunDirError(
                f"{self.path.parent}: cannot write the run folder ({e.strerror or e}); choose a writable runs_dir "
                f"(the workflow's runs_dir key or --runs-dir), or fix its permissions"
            ) from None
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    owner = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    owner = {}
                same_host = owner.get("host") == me["host"]
                if same_host and isinstance(owner.get("pid"), int) and not _alive(owner["pid"]):
                    self.stale_taken = owner
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunLockedError(
                    f"{self.path}: this workflow is already running (pid {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')} since {owner.get('since', '?')}); wait for it to finish, or if that "
                    f"process is gone on another host, delete the lock file"
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self._held = True
            return self
        raise RunLockedError(f"{self.path}: could not take the run lock; try again")

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically."""
    write_text_atomic(run_dir / "manifest.json", json.dumps(manifest, indent=2, default=str))


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "manifest.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise GeosegError(f"{path}: no manifest; is {run_dir} a geoseg run directory?") from None
    except ValueError as e:
        raise GeosegError(f"{path}: damaged manifest ({e})") from None


@dataclass
class Catalog:
    """The run catalog: one SQLite file next to the runs (``<runs_dir>/catalog.sqlite``)."""

    path: Path

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, scenes INTEGER,
        tiles_done INTEGER, tiles_total INTEGER, started TEXT, ended TEXT, seconds REAL,
        run_dir TEXT NOT NULL, workflow TEXT, error TEXT
    )"""

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30)
        con.execute(self._SCHEMA)
        return con

    def upsert(self, **row: Any) -> None:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        updates = ", ".join(f"{k}=excluded.{k}" for k in row if k != "run_id")
        with closing(self._connect()) as con, con:
            con.execute(
                f"INSERT INTO runs ({cols}) VALUES ({marks}) ON CONFLICT(run_id) DO UPDATE SET {updates}",
                list(row.values()),
            )

    def list(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with closing(self._connect()) as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("SELECT * FROM runs ORDER BY started DESC, run_id DESC")]

    def get(self, run_id: str) -> dict[str, Any]:
        rows = [r for r in self.list() if r["run_id"] == run_id or r["run_id"].startswith(run_id)]
        if not rows:
            raise GeosegError(f"{self.path}: no run with id {run_id!r}; `geoseg runs` lists them")
        if len(rows) > 1:
            raise GeosegError(f"{self.path}: run id {run_id!r} is ambiguous ({[r['run_id'] for r in rows]}); give more of it")
        return rows[0]
