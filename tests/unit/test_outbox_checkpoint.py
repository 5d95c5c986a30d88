"""The outbox's checkpoints wait for a pause in the commits, but not without bound."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from hypervisor_notifier.notifier.outbox_checkpoint import Checkpointer

#: Generous: a loaded test machine must not make a condition look false.
DEADLINE = 20.0


@pytest.fixture
def database(tmp_path) -> Iterator[tuple[str, sqlite3.Connection]]:
    """A WAL database and the connection that commits to it, as the outbox has."""
    path = str(tmp_path / "outbox.sqlite")
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE events (body BLOB)")
    yield path, writer
    writer.close()


def commit(writer: sqlite3.Connection, checkpointer: Checkpointer) -> None:
    writer.execute("INSERT INTO events VALUES (?)", (b"x" * 1000,))
    checkpointer.due()


def commit_until(condition: Callable[[], bool], writer, checkpointer) -> bool:
    """Commit every 10 ms until ``condition`` holds (True) or the deadline passes."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            return False
        commit(writer, checkpointer)
        threading.Event().wait(0.01)
    return True


def test_no_checkpoint_runs_while_commits_keep_coming_one_follows_the_pause(database):
    path, writer = database
    checkpointer = Checkpointer(path, writer, interval=0, quiet=2.0, max_delay=60)
    try:
        started = time.monotonic()
        commit_until(lambda: time.monotonic() - started > 1.0, writer, checkpointer)
        assert checkpointer.checkpoints == 0

        deadline = time.monotonic() + DEADLINE
        while checkpointer.checkpoints == 0 and time.monotonic() < deadline:
            threading.Event().wait(0.05)
        assert checkpointer.checkpoints == 1
        copied = sqlite3.connect(path).execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert copied[1] == copied[2], "the log was not copied into the database"
    finally:
        checkpointer.stop()


def test_steady_commits_are_still_checkpointed_after_max_delay(database):
    path, writer = database
    checkpointer = Checkpointer(path, writer, interval=0, quiet=60, max_delay=0.3)
    try:
        assert commit_until(lambda: checkpointer.checkpoints >= 2, writer, checkpointer)
    finally:
        checkpointer.stop()


def test_a_stop_does_not_wait_for_the_pause(database):
    path, writer = database
    checkpointer = Checkpointer(path, writer, interval=0, quiet=60, max_delay=60)
    commit(writer, checkpointer)

    started = time.monotonic()
    checkpointer.stop()

    assert time.monotonic() - started < DEADLINE / 2
    assert checkpointer.checkpoints == 0
