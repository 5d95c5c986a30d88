"""Checkpoints of the outbox's WAL, in a thread of their own, off the path of a put.

SQLite copies its write-ahead log into the database file (a checkpoint)
once the log passed 1,000 pages, inside whichever commit crossed that mark,
and a checkpoint waits for the disk (``fsync``). In the outbox that commit
holds the lock that puts and confirms share: a burst's events would wait in
memory, uncommitted, behind one slow disk. So the outbox's own connection
never checkpoints; this thread does, on a connection of its own, after
commits, at most once per ``interval``. A ``PASSIVE`` checkpoint blocks no
writer: puts commit to the log meanwhile.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

LOG = logging.getLogger(__name__)


class Checkpointer:
    """Checkpoint the database at ``path`` after commits of ``writer``, from a thread.

    Arguments:
        path: The database file (in WAL mode).
        writer: The connection that commits; its automatic checkpoints are turned off.
        interval: The shortest time, in seconds, between two checkpoints.

    """

    def __init__(self, path: str, writer: sqlite3.Connection, interval: float = 0.2) -> None:
        self.interval = interval
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        writer.execute("PRAGMA wal_autocheckpoint=0")
        self._due = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-checkpoint", daemon=True)
        self._thread.start()

    def due(self) -> None:
        """Note a commit: a checkpoint follows (safe from any thread)."""
        self._due.set()

    def stop(self) -> None:
        """Stop the thread and close its connection (a checkpoint under way ends first)."""
        self._stopped.set()
        self._due.set()
        self._thread.join()
        self._db.close()

    def _run(self) -> None:
        while True:
            self._due.wait()
            if self._stopped.is_set():
                return
            self._due.clear()
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                # The log keeps the events; the next checkpoint copies them.
                LOG.warning("checkpoint of the outbox failed: %s", exc)
            # The commits of a burst share one checkpoint.
            self._stopped.wait(self.interval)
