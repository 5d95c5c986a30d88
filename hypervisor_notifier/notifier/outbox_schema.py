"""What a file at ``[outbox] path`` is, before anything opens it as the outbox.

Only a file this service created is ever opened as the outbox, let alone
moved aside: an SQLite database whose header carries :data:`APPLICATION_ID`
(``PRAGMA application_id``), at a schema version (``PRAGMA user_version``)
this code knows. Outboxes of the first releases carry neither mark; exactly
their shape (the tables ``events`` and ``states`` and nothing else) is
recognised as schema version 0 and upgraded forward in place.

:func:`inspect` reads the file without changing it (the header with plain
reads, then SQLite read-only) and is used by the service at start, by the
preflight and by the upgrade check.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import os
import re
import sqlite3
import stat
import urllib.parse

from hypervisor_notifier.notifier import outbox_wal

#: ``PRAGMA application_id`` of an outbox: "HNOB" (hypervisor-notifier outbox).
APPLICATION_ID = 0x484E4F42
#: ``PRAGMA user_version`` of the outbox this code writes. 0: the unmarked
#: first releases; 1: marked, with the ``meta`` table (the highest ``seq`` issued).
SCHEMA_VERSION = 1

SQLITE_MAGIC = b"SQLite format 3\x00"
#: The tables of a version 0 outbox, and their columns.
LEGACY_SHAPE = {"events": ("id", "body"), "states": ("uuid", "name", "power_state")}
#: Statements that bring a version ``n - 1`` outbox to version ``n`` (one transaction each).
UPGRADES = {
    1: (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER)",
        f"PRAGMA application_id = {APPLICATION_ID}",
    ),
}
#: The tables of a new outbox (then marked with SCHEMA_VERSION).
CREATE = (
    "CREATE TABLE events (id INTEGER PRIMARY KEY, body BLOB)",
    # The last state put for each instance: a restart resyncs against it.
    "CREATE TABLE states (uuid TEXT PRIMARY KEY, name, power_state)",
    *UPGRADES[1],
)


class Kind(str, enum.Enum):
    """What a path holds."""

    MISSING = "missing"
    OURS = "ours"
    NEWER = "newer"
    FOREIGN = "foreign"
    DIRECTORY = "directory"
    DAMAGED = "damaged"


class OutboxRefused(ValueError):
    """``[outbox] path`` names something that must not be opened as the outbox."""


@dataclasses.dataclass(frozen=True)
class OutboxFile:
    """What :func:`inspect` found.

    Arguments:
        kind: See :class:`Kind`.
        version: The outbox schema version (ours, newer, damaged), else None.
        description: One line: what the path holds, for an operator.

    """

    kind: Kind
    version: int | None
    description: str

    @property
    def refused(self) -> bool:
        """Whether the service must refuse to start on it (nothing there is ours to use)."""
        return self.kind in (Kind.DIRECTORY, Kind.FOREIGN, Kind.NEWER)


def inspect(path: str) -> OutboxFile:
    """Tell what ``path`` holds, changing nothing.

    A file of ours is also checked for damage: ``PRAGMA quick_check`` and the
    write-ahead log's frames (see :mod:`.outbox_wal`).

    Arguments:
        path: ``[outbox] path``.

    Raises:
        OSError: The file exists but cannot be read (permissions).

    """
    if not os.path.lexists(path):
        return OutboxFile(Kind.MISSING, None, "no outbox yet: the service creates it")
    if os.path.isdir(path):
        return OutboxFile(Kind.DIRECTORY, None, "is a directory, not an outbox file")
    if not os.path.exists(path):
        return OutboxFile(Kind.FOREIGN, None, "is a dangling symbolic link")
    if not stat.S_ISREG(os.stat(path).st_mode):
        return OutboxFile(Kind.FOREIGN, None, "is not a regular file")
    with open(path, "rb") as file:
        header = file.read(100)
    if not header.startswith(SQLITE_MAGIC) or len(header) < 100:
        what = "an empty file" if not header else "not an SQLite database"
        return OutboxFile(Kind.FOREIGN, None, f"is {what}: not an outbox this service created")
    application_id = int.from_bytes(header[68:72], "big")
    if application_id not in (0, APPLICATION_ID):
        return OutboxFile(
            Kind.FOREIGN,
            None,
            f"is the SQLite database of another application (application_id "
            f"{application_id:#x}): not an outbox this service created",
        )
    try:
        db = connect_read_only(path)
    except sqlite3.Error as exc:
        raise OSError(f"cannot open {path} read-only: {exc}") from None
    try:
        return _classify(db, path, application_id)
    finally:
        db.close()


def connect_read_only(path: str) -> sqlite3.Connection:
    """Open ``path`` with SQLite, writing nothing (nor creating a file) beside it.

    Without a write-ahead log, ``immutable``: SQLite reads the file only. With
    one, read-only: the log is read, never checkpointed nor truncated (SQLite
    may update its shared-memory index, ``-shm``, as every reader does).

    Arguments:
        path: An SQLite database.

    """
    mode = "mode=ro" if os.path.exists(path + "-wal") else "immutable=1"
    return sqlite3.connect(f"file:{urllib.parse.quote(path)}?{mode}", uri=True)


def _classify(db: sqlite3.Connection, path: str, header_id: int) -> OutboxFile:
    """Ours (which version), newer, foreign or damaged, from SQLite's own reading."""
    try:
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        legacy = application_id == 0 and _has_legacy_shape(db)
    except sqlite3.DatabaseError as exc:
        if header_id != APPLICATION_ID:
            return OutboxFile(Kind.FOREIGN, None, f"cannot be read as an outbox ({exc})")
        return OutboxFile(Kind.DAMAGED, None, f"is a damaged outbox: {exc}")
    if application_id != APPLICATION_ID and not legacy:
        return OutboxFile(
            Kind.FOREIGN, None, "is an SQLite database, not an outbox this service created"
        )
    if legacy:
        version = 0
    if version > SCHEMA_VERSION:
        return OutboxFile(
            Kind.NEWER,
            version,
            f"is an outbox of schema version {version}, newer than this release knows "
            f"({SCHEMA_VERSION}): run the release that wrote it, or move the file away",
        )
    damage = _damage(db, path)
    if damage:
        return OutboxFile(Kind.DAMAGED, version, f"is a damaged outbox: {damage}")
    return OutboxFile(Kind.OURS, version, f"is an outbox of schema version {version}")


def _has_legacy_shape(db: sqlite3.Connection) -> bool:
    """Whether the database holds exactly the tables of a version 0 outbox."""
    tables = {
        name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if tables != set(LEGACY_SHAPE):
        return False
    return all(
        tuple(row[1] for row in db.execute(f"PRAGMA table_info({table})")) == columns
        for table, columns in LEGACY_SHAPE.items()
    )


def _damage(db: sqlite3.Connection, path: str) -> str | None:
    """What is damaged in an outbox of ours (None: nothing found)."""
    # The log first: SQLite's own reading (quick_check included) ignores what
    # follows a bad frame.
    wal = outbox_wal.scan(path + "-wal")
    # Read twice: a frame being written by a running service (the preflight reads a
    # live outbox) is not damage, and is complete by the second reading.
    if wal.damaged and outbox_wal.scan(path + "-wal") == wal:
        return wal.describe()
    try:
        found = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if found == ["ok"] else "; ".join(found)


def create(path: str) -> None:
    """Create an empty outbox at ``path``, marked as ours, atomically.

    It is built under a temporary name and linked into place: a file at
    ``path`` is never half an outbox, and one that appeared meanwhile is
    never overwritten (``FileExistsError``).

    Arguments:
        path: ``[outbox] path``; its directory is created if missing.

    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.creating-{os.getpid()}"
    _remove_set(temporary)  # left by a crash of a process with the same id
    try:
        db = sqlite3.connect(temporary, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # kept in the header: every open uses it
            db.execute("BEGIN")
            for statement in CREATE:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        finally:
            db.close()  # the last connection: checkpoints and removes the log
        os.link(temporary, path)
    finally:
        _remove_set(temporary)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def upgrade(db: sqlite3.Connection, version: int) -> None:
    """Bring an outbox of schema ``version`` to :data:`SCHEMA_VERSION`, a step per transaction.

    Arguments:
        db: The outbox, opened with ``isolation_level=None``.
        version: Its schema version (as :func:`inspect` found it).

    """
    for target in range(version + 1, SCHEMA_VERSION + 1):
        db.execute("BEGIN")
        try:
            for statement in UPGRADES[target]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {target}")
            db.execute("COMMIT")
        except sqlite3.Error:
            db.execute("ROLLBACK")
            raise
    # The marks in the main file's header too, where inspect() reads them first.
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


#: Copies moved aside kept per reason; older ones of ours are deleted.
KEEP_MOVED = 3
#: The companions SQLite keeps beside a database.
COMPANIONS = ("", "-wal", "-shm")


def move_aside(path: str, reason: str, keep: int = KEEP_MOVED) -> str:
    """Rename an outbox of ours to ``<path>.<reason>-<UTC time>``; keep the newest ``keep``.

    Call it only for a file :func:`inspect` found to be ours (or damaged).
    Older copies are deleted only if their name is one this function makes
    and they are SQLite files: never a file the service did not create.

    Arguments:
        path: The outbox.
        reason: ``unusable`` or ``damaged``.
        keep: How many copies of that reason to keep, this one included.

    Returns:
        The new name.

    """
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    moved = f"{path}.{reason}-{stamp}"
    # Renaming needs no space: this works on a full disk too.
    for suffix in COMPANIONS:
        if os.path.lexists(path + suffix):
            os.replace(path + suffix, moved + suffix)
    directory, name = os.path.split(os.path.abspath(path))
    pattern = re.compile(re.escape(f"{name}.{reason}-") + r"\d{8}T\d{12}Z")
    copies = sorted(entry for entry in os.listdir(directory) if pattern.fullmatch(entry))
    for old in copies[:-keep] if keep else copies:
        old_path = os.path.join(directory, old)
        if _is_sqlite(old_path):
            _remove_set(old_path)
    return moved


def _is_sqlite(path: str) -> bool:
    """Whether ``path`` is a regular file with an SQLite header."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with open(path, "rb") as file:
            return file.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def _remove_set(path: str) -> None:
    """Delete a database of ours with its companions."""
    for suffix in COMPANIONS:
        if os.path.lexists(path + suffix):
            os.unlink(path + suffix)
