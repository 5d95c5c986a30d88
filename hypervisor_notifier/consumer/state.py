"""What a consumer remembers across restarts: delivered event_ids and each instance's last seq.

Without it a restarted consumer starts with an empty memory: a captured
event replayed to it (or a publisher's resend) is delivered again, and an
older event of an instance is no longer recognised as stale. With a state
file, :class:`~hypervisor_notifier.consumer.ordering.EventFilter` reloads
both at start and records each delivery before the message is acked.

The file is a small SQLite database (WAL, ``synchronous=NORMAL``: a
delivery recorded survives the consumer's crash, as the ack that follows
it does), marked with its own ``application_id``: any other file at the
path is refused, never changed. It is bounded: the newest ``max_ids``
event_ids and ``max_ids`` instances are kept.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading

LOG = logging.getLogger(__name__)

#: "HNCS" (hypervisor-notifier consumer state): marks the file as ours.
APPLICATION_ID = 0x484E4353
SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered (n INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE);
CREATE TABLE IF NOT EXISTS last_seq (
    host TEXT NOT NULL, instance_uuid TEXT NOT NULL, seq INTEGER NOT NULL,
    n INTEGER NOT NULL, PRIMARY KEY (host, instance_uuid));
CREATE INDEX IF NOT EXISTS last_seq_n ON last_seq (n);
"""
#: Trim the tables once per this many deliveries (not on every one: it scans an index).
TRIM_EVERY = 1000


class ConsumerState:
    """A consumer's delivered event_ids and per-instance last seq, in a SQLite file.

    Thread-safe (one consumer thread writes; a lock guards the connection).

    Arguments:
        path: The file; created (with its directory) if missing. Any file
            there that is not a consumer state is refused.
        max_ids: How many event_ids, and how many instances' seq, to keep.

    Raises:
        ValueError: The path cannot be opened or is not a consumer state
            (the text names the file).

    """

    def __init__(self, path: str, max_ids: int = 100_000) -> None:
        self.path = path
        self.max_ids = max_ids
        self._lock = threading.Lock()
        self._writes = 0
        #: Deliveries that could not be recorded (a full disk...): logged at ERROR.
        self.failures = 0
        try:
            directory = os.path.dirname(path)
            if directory:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._open()
        except (OSError, sqlite3.Error, ValueError) as exc:
            raise ValueError(f"consumer state file {path!r}: {exc}") from None

    def _open(self) -> None:
        db = self._db
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        if application_id not in (0, APPLICATION_ID) or (
            application_id == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        ):
            # Someone else's database: never touch it.
            db.close()
            raise ValueError("not a hypervisor-notifier consumer state (refusing to use it)")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA application_id={APPLICATION_ID}")

    def load(self) -> tuple[list[str], dict[tuple[str, str], int]]:
        """The remembered event_ids (oldest first) and ``{(host, instance_uuid): seq}``."""
        with self._lock:
            ids = [row[0] for row in self._db.execute("SELECT event_id FROM delivered ORDER BY n")]
            seqs = {
                (host, instance): seq
                for host, instance, seq in self._db.execute(
                    "SELECT host, instance_uuid, seq FROM last_seq"
                )
            }
        return ids, seqs

    def delivered(self, event_id: str, host: str, instance_uuid: str, seq: int) -> None:
        """Record one delivery (committed when this returns, unless logged as failed).

        A failure to write (a full disk, a removed file) does not stop the
        consumer: the event was handled, and is remembered in memory; only a
        replay of it after a restart would no longer be refused. It is
        logged and counted in :attr:`failures`.
        """
        with self._lock:
            try:
                self._record(event_id, host, instance_uuid, seq)
            except sqlite3.Error as exc:
                self.failures += 1
                LOG.error(
                    "consumer state file %r: could not record event %s (%s); after a "
                    "restart a replay of it would not be refused",
                    self.path,
                    event_id,
                    exc,
                )

    def _record(self, event_id: str, host: str, instance_uuid: str, seq: int) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            cursor = db.execute(
                "INSERT OR IGNORE INTO delivered (event_id) VALUES (?)", (event_id,)
            )
            db.execute(
                "INSERT INTO last_seq (host, instance_uuid, seq, n) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (host, instance_uuid) DO UPDATE SET "
                "seq = max(seq, excluded.seq), n = excluded.n",
                (host, instance_uuid, seq, cursor.lastrowid),
            )
            self._writes += 1
            if self._writes % TRIM_EVERY == 0:
                self._trim()
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _trim(self) -> None:
        (newest,) = self._db.execute("SELECT max(n) FROM delivered").fetchone()
        if newest is None:
            return
        self._db.execute("DELETE FROM delivered WHERE n <= ?", (newest - self.max_ids,))
        self._db.execute(
            "DELETE FROM last_seq WHERE n <= (SELECT n FROM last_seq ORDER BY n DESC "
            "LIMIT 1 OFFSET ?)",
            (self.max_ids,),
        )

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
