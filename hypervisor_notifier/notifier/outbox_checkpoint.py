"""Checkpoints of the outbox's WAL, in a thread of their own, off the path of a put.

SQLite copies its write-ahead log into the database file (a checkpoint)
once the log passed 1,000 pages, inside whichever commit crossed that mark,
and a checkpoint waits for the disk (``fsync``). In the outbox that commit
holds the lock that puts and confirms share: a burst's events would wait in
memory, uncommitted, behind one slow disk. So the outbox's own connection
never checkpoints; this thread does, on a connection of its own. A
``PASSIVE`` checkpoint blocks no writer, but its ``fsync`` still slows the
commits beside it: the file system makes a write that grows the log wait
for the flush (measured during a burst: a one-row commit held 20 ms). So a
checkpoint waits for a pause in the commits (``quiet``), and for no longer
than ``max_delay`` under a steady load, which bounds the log's growth.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

LOG = logging.getLogger(__name__)


class Checkpointer:
    """Checkpoint the database at ``path`` after commits of ``writer``, from a thread.

    Arguments:
        path: The database file (in WAL mode).
        writer: The connection that commits; its automatic checkpoints are turned off.
        interval: The shortest time, in seconds, between two checkpoints.
        quiet: Seconds without a commit that make a pause to checkpoint in.
        max_delay: The longest, in seconds, a checkpoint waits for a pause
            after the first commit it copies.

    """

    def __init__(
        self,
        path: str,
        writer: sqlite3.Connection,
        interval: float = 0.2,
        quiet: float = 0.05,
        max_delay: float = 1.0,
    ) -> None:
        self.interval = interval
        self.quiet = quiet
        self.max_delay = max_delay
        #: Checkpoints run since start.
        self.checkpoints = 0
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        writer.execute("PRAGMA wal_autocheckpoint=0")
        self._last_commit = 0.0
        self._due = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-checkpoint", daemon=True)
        self._thread.start()

    def due(self) -> None:
        """Note a commit: a checkpoint follows (safe from any thread)."""
        self._last_commit = time.monotonic()
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
            self._wait_for_a_pause(deadline=time.monotonic() + self.max_delay)
            if self._stopped.is_set():
                return
            self._due.clear()
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
            except sqlite3.Error as exc:
                # The log keeps the events; the next checkpoint copies them.
                LOG.warning("checkpoint of the outbox failed: %s", exc)
            # The commits of a burst share one checkpoint.
            self._stopped.wait(self.interval)

    def _wait_for_a_pause(self, deadline: float) -> None:
        """Return once no commit came for ``quiet`` s, at ``deadline``, or on a stop."""
        while not self._stopped.is_set():
            now = time.monotonic()
            wait = min(self._last_commit + self.quiet, deadline) - now
            if wait <= 0:
                return
            self._stopped.wait(wait)
