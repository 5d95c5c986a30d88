"""The durable outbox: :class:`~.outbox.MemoryOutbox` kept in SQLite too.

A crash of the service loses nothing: a restarted service publishes what its
predecessor had not had confirmed (see :mod:`hypervisor_notifier.notifier.outbox` for
the contract every outbox keeps). Which files are opened as the outbox, and
how an older one is upgraded, is :mod:`.outbox_schema`'s business.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from typing import Any

from hypervisor_notifier import wire
from hypervisor_notifier.events import LifecycleEvent, MalformedEvent, PowerState
from hypervisor_notifier.notifier import outbox_schema
from hypervisor_notifier.notifier.outbox import MAX_EVENTS, Entry, MemoryOutbox
from hypervisor_notifier.notifier.outbox_checkpoint import Checkpointer
from hypervisor_notifier.notifier.outbox_schema import Kind, OutboxFile, OutboxRefused
from hypervisor_notifier.signing import Signer

LOG = logging.getLogger(__name__)

#: Rows of one statement (three values at most each: far below SQLite's 32,766 variables).
#: sqlite3 lets go of the GIL around every statement step: executemany makes one per
#: row, each then a wait to get the interpreter back from a busy thread (the
#: publisher's, or the dispatch's) while the outbox's lock is held.
STATEMENT_ROWS = 64
#: Rows of one statement recording the states of a confirm: a confirm window's worth.
STATE_ROWS = 256
#: Prepared statements the connection keeps: one per kind and number of rows.
CACHED_STATEMENTS = 512

#: The ``meta`` row holding the highest ``seq`` of the events that left the outbox.
LAST_SEQ = "last_seq"


class SQLiteOutbox(MemoryOutbox):
    """An outbox that also survives a crash of the service: SQLite in WAL mode.

    The events of a ``put_many`` are committed in one transaction before it
    returns (group commit): an event the service accepted is not lost by its
    crash. The log is copied into the database by a thread of its own
    (:mod:`~hypervisor_notifier.notifier.outbox_checkpoint`), never inside a
    commit, which then never waits for the disk under the outbox's lock.
    Confirmed entries are deleted in the groups the broker acks them, in the
    same transaction as the last state of their instances and the highest
    ``seq`` issued (so :attr:`last_seq` survives a restart even with the
    outbox empty). Entries left by a previous run are loaded at start and
    published first.

    With ``synchronous = normal`` a commit survives a crash of the service
    but not a power cut of the host (which takes its guests down too; the
    resync after the reboot reports their states); ``full`` survives both,
    at about ten times the cost per event.

    At start the path is inspected (:func:`.outbox_schema.inspect`): a
    directory, a file this service did not create or an outbox of a newer
    schema raise :class:`.OutboxRefused` and are left untouched; a missing
    outbox is created, an older one upgraded in place. A damaged outbox is
    moved aside to ``<path>.damaged-<time>`` and kept for inspection; what
    can be read from it is copied into a new outbox and published, and the
    damage stays in :attr:`problem` (and :attr:`damaged`) for this run.

    If the file cannot be created, opened or written (disk full, read-only),
    the outbox goes on in memory and says so in :attr:`problem`; a file of
    ours is then moved to ``<path>.unusable-<time>``: its states stopped
    following what was published, so the next start must not trust them.
    Only the newest few moved copies are kept.

    Arguments:
        path: The database file; its directory is created if missing.
        max_events: The coalescing bound.
        synchronous: ``normal`` or ``full`` (SQLite's ``PRAGMA synchronous``).
        signer: See :class:`MemoryOutbox`.

    Raises:
        OutboxRefused: ``path`` is not something to open as the outbox.

    """

    def __init__(
        self,
        path: str,
        max_events: int = MAX_EVENTS,
        synchronous: str = "normal",
        *,
        signer: Signer | None = None,
    ) -> None:
        super().__init__(max_events, signer=signer)
        self.path = path
        self._problem: str | None = None
        self._db: sqlite3.Connection | None = None
        self._ours = False  # whether path is a file this outbox created or recognised
        self._last_seq = 0
        self._checkpointer: Checkpointer | None = None
        try:
            found = outbox_schema.inspect(path)
        except OSError as exc:  # unreadable: not ours to judge, nor to move
            self._degrade(exc)
            return
        if found.refused:
            raise OutboxRefused(f"[outbox] path {path} {found.description}")
        try:
            kept = None
            if found.kind is Kind.DAMAGED:  # ours: kept for inspection, never deleted here
                kept = outbox_schema.move_aside(path, "damaged")
            if found.kind in (Kind.MISSING, Kind.DAMAGED):
                outbox_schema.create(path)
            self._db = self._open(path, synchronous)
            self._ours = True
            if found.kind is Kind.OURS and found.version < outbox_schema.SCHEMA_VERSION:
                outbox_schema.upgrade(self._db, found.version)
                LOG.info(
                    "outbox %s upgraded from schema version %d to %d",
                    path,
                    found.version,
                    outbox_schema.SCHEMA_VERSION,
                )
            if kept is not None:
                self._salvage(self._db, kept, found)
            self._recover(self._db)
            self._checkpointer = Checkpointer(path, self._db)
        except (sqlite3.Error, OSError) as exc:
            self._degrade(exc)

    @property
    def problem(self) -> str | None:
        """See :attr:`Outbox.problem`."""
        return self._problem

    @property
    def durable(self) -> bool:
        """See :attr:`Outbox.durable`: until the file fails (a damaged one was replaced)."""
        return self._db is not None

    @property
    def last_seq(self) -> int:
        """See :attr:`Outbox.last_seq`: the recorded one, or the highest seq still stored."""
        return self._last_seq

    @staticmethod
    def _open(path: str, synchronous: str) -> sqlite3.Connection:
        # isolation_level=None: the transactions are ours (BEGIN ... COMMIT below).
        db = sqlite3.connect(
            path,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=CACHED_STATEMENTS,
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        return db

    def _recover(self, db: sqlite3.Connection) -> None:
        """Load the entries a previous run left, in order, and the highest seq it issued."""
        rows = db.execute("SELECT id, body FROM events ORDER BY id").fetchall()
        last_seq = db.execute("SELECT max(value) FROM meta WHERE key = ?", (LAST_SEQ,))
        self._last_seq = last_seq.fetchone()[0] or 0
        unreadable = []
        for entry_id, body in rows:
            try:
                event = wire.decode(body)
            except MalformedEvent:
                unreadable.append(entry_id)
                continue
            self._waiting.append(Entry(entry_id, event, body))
            self._waiting_per_instance[event.subject] += 1
            self._last_seq = max(self._last_seq, event.seq)
        if unreadable:
            LOG.error("outbox %s: dropping %d unreadable entries", self.path, len(unreadable))
            db.executemany("DELETE FROM events WHERE id = ?", [(i,) for i in unreadable])
        if rows:
            self._next_id = rows[-1][0] + 1
            LOG.info("outbox %s: %d events from the previous run", self.path, len(self._waiting))
            self.wake()

    def _salvage(self, db: sqlite3.Connection, kept: str, found: OutboxFile) -> None:
        """Copy what can be read from the damaged outbox ``kept`` into ``db``; say what is lost."""
        events, states, last_seq, failures = _read_damaged(kept)
        db.execute("BEGIN")
        db.executemany("INSERT INTO events VALUES (?, ?)", events)
        db.executemany("INSERT OR REPLACE INTO states VALUES (?, ?, ?)", states)
        db.execute(*_seq_floor(last_seq))
        db.execute("COMMIT")
        self.damaged = True
        self._problem = (
            f"outbox {self.path} {found.description}; kept as {kept} for "
            f"inspection; {len(events)} events and {len(states)} states recovered from it"
            + (f"; unreadable: {'; '.join(failures)}" if failures else "")
        )
        LOG.error("%s", self._problem)

    def known_states(self) -> dict[str, tuple[str, PowerState]]:
        """See :meth:`Outbox.known_states`: confirmed states, then those still waiting."""
        with self._lock:
            rows = self._query("SELECT uuid, name, power_state FROM states")
            rows += _state_rows([*self._inflight.values(), *self._waiting])
        states = {}
        for uuid, name, code in rows:
            with contextlib.suppress(ValueError):  # a state this version does not know
                states[uuid] = (name, PowerState(code))
        return states

    def forget_states(self, uuids: list[str]) -> None:
        """See :meth:`Outbox.forget_states`."""
        with self._lock:
            self._transaction(("DELETE FROM states WHERE uuid = ?", [(uuid,) for uuid in uuids]))

    def _store(self, entries: list[Entry]) -> None:
        # The only write before publishing: the whole batch in one transaction.
        rows = [(entry.entry_id, entry.body) for entry in entries]
        self._transaction(*_statements("INSERT INTO events VALUES ", "(?, ?)", rows))

    def _confirmed(self, entries: list[Entry]) -> None:
        # Off the latency path: the last state of an instance is recorded once its
        # event is confirmed; known_states() adds those still waiting.
        if entries:
            self._transaction(
                *_deletion(entries),
                *_statements(
                    "INSERT OR REPLACE INTO states VALUES ",
                    "(?, ?, ?)",
                    _state_rows(entries),
                    rows_per_statement=STATE_ROWS,
                ),
                _seq_row(entries),
            )

    def _dropped(self, entries: list[Entry]) -> None:
        if entries:
            self._transaction(*_deletion(entries), _seq_row(entries))

    def _query(self, sql: str) -> list[Any]:
        """The rows of a query; none once degraded (a failure degrades the outbox)."""
        if self._db is None:
            return []
        try:
            return self._db.execute(sql).fetchall()
        except sqlite3.Error as exc:
            self._degrade(exc)
            return []

    def _transaction(self, *statements: tuple[str, list[tuple[object, ...]]]) -> None:
        """Run the statements in one transaction; a failure degrades the outbox."""
        db = self._db
        if db is None:
            return
        try:
            if len(statements) == 1 and len(statements[0][1]) == 1:
                # One statement is a transaction of its own (autocommit): a group of up
                # to INSERT_ROWS events is one call, not three, into SQLite (each lets
                # the other threads take the interpreter, and waits to get it back).
                sql, (row,) = statements[0]
                db.execute(sql, row)
            else:
                db.execute("BEGIN")
                for sql, rows in statements:
                    db.executemany(sql, rows)
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self._degrade(exc)
            return
        if self._checkpointer is not None:
            self._checkpointer.due()

    def _degrade(self, exc: Exception) -> None:
        """Go on in memory (publishing matters more than durability); move our file aside."""
        db, self._db = self._db, None
        self._stop_checkpoints()
        self._problem = f"outbox {self.path} is not usable ({exc}): events are kept in memory only"
        LOG.error("%s; publishing goes on", self._problem)
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        if self._ours:  # never a file this service did not create
            self._ours = False
            # A file that cannot be renamed is no danger either.
            with contextlib.suppress(OSError):
                outbox_schema.move_aside(self.path, "unusable")

    def _stop_checkpoints(self) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()

    def close(self) -> None:
        """Close the database and the wake descriptors."""
        self._stop_checkpoints()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
        super().close()


Statement = tuple[str, list[tuple[object, ...]]]


def _statements(
    head: str,
    marks: str,
    rows: list[tuple[object, ...]],
    tail: str = "",
    *,
    rows_per_statement: int = STATEMENT_ROWS,
) -> list[Statement]:
    """``head``, the ``marks`` of each row and ``tail``: a statement per ``rows_per_statement``."""
    statements = []
    for start in range(0, len(rows), rows_per_statement):
        chunk = rows[start : start + rows_per_statement]
        sql = head + ", ".join([marks] * len(chunk)) + tail
        statements.append((sql, [tuple(value for row in chunk for value in row)]))
    return statements


def _deletion(entries: list[Entry]) -> list[Statement]:
    """The statements that delete ``entries`` from the events table.

    Acks confirm runs of consecutive entries: such a run (its ids distinct and
    as many as its span) is one range, whatever its length.
    """
    ids = {entry.entry_id for entry in entries}
    low, high = min(ids), max(ids)
    if high - low + 1 == len(ids):
        return [("DELETE FROM events WHERE id BETWEEN ? AND ?", [(low, high)])]
    return _statements("DELETE FROM events WHERE id IN (", "?", [(i,) for i in sorted(ids)], ")")


def _seq_floor(seq: int) -> tuple[str, tuple[object, ...]]:
    """The statement that raises the recorded highest seq to ``seq``."""
    return (
        "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
        "value = max(value, excluded.value)",
        (LAST_SEQ, seq),
    )


def _seq_row(entries: list[Entry]) -> tuple[str, list[tuple[object, ...]]]:
    """:func:`_seq_floor` of the highest seq of ``entries``, for :meth:`_transaction`."""
    sql, row = _seq_floor(max(entry.event.seq for entry in entries))
    return sql, [row]


def _read_damaged(path: str) -> tuple[list[Any], list[Any], int, list[str]]:
    """(events, states, highest recorded seq, what could not be read) of a damaged outbox.

    Read-only: the copy kept for inspection stays as it was found.
    """
    rows: dict[str, list[Any]] = {}
    failures = []
    queries = {
        "events": "SELECT id, body FROM events ORDER BY id",
        "states": "SELECT uuid, name, power_state FROM states",
        "meta": "SELECT value FROM meta WHERE key = 'last_seq'",
    }
    try:
        db = outbox_schema.connect_read_only(path)
    except sqlite3.Error as exc:
        return [], [], 0, [str(exc)]
    try:
        for table, query in queries.items():
            try:
                rows[table] = db.execute(query).fetchall()
            except sqlite3.DatabaseError as exc:
                rows[table] = []
                if "no such table: meta" not in str(exc):  # version 0 had none
                    failures.append(f"{table}: {exc}")
    finally:
        db.close()
    last_seq = max((value for (value,) in rows["meta"]), default=0)
    return rows["events"], rows["states"], last_seq, failures


def _state_rows(entries: list[Entry]) -> list[tuple[str, str, int]]:
    """(uuid, name, power state) of each lifecycle entry's event, in entry order."""
    ordered = sorted(entries, key=lambda entry: entry.entry_id)
    return [
        (e.event.instance_uuid, e.event.instance_name, int(e.event.power_state))
        for e in ordered
        if isinstance(e.event, LifecycleEvent)
    ]
