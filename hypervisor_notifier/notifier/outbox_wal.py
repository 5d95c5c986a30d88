"""Committed transactions that SQLite would silently drop from a WAL file.

SQLite replays a write-ahead log frame by frame and stops at the first frame
whose checksum does not match: every frame after it is ignored, committed or
not, and the next writer overwrites them. That is right for a torn last
transaction (a crash while writing it: it was never committed), and silent
loss when bytes in the middle of the log were damaged. This module reads the
log as SQLite does and counts the *commit* frames of the current log
generation (same salts) that follow the first bad frame: each one is a
transaction that was committed and would be lost without a word.

The format is SQLite's documented WAL format (https://sqlite.org/fileformat.html,
"The Write-Ahead Log"): a 32-byte header, then frames of a 24-byte header and
one page each, checksummed cumulatively.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import BinaryIO

#: The header's magic number; the low bit says the checksums are big-endian.
MAGIC = (0x377F0682, 0x377F0683)
HEADER = struct.Struct(">8I")  # magic, version, page size, checkpoint, salt1, salt2, sum1, sum2
FRAME_HEADER = struct.Struct(">6I")  # page number, commit size, salt1, salt2, sum1, sum2
MASK = 0xFFFFFFFF


@dataclasses.dataclass(frozen=True)
class WalReport:
    """What a WAL file holds that SQLite would not replay.

    Arguments:
        valid_frames: Frames SQLite replays (up to the first bad one).
        lost_commits: Committed transactions after the first bad frame (-1: the
            header itself is damaged, so every frame is ignored, how many is unknown).

    """

    valid_frames: int
    lost_commits: int

    @property
    def damaged(self) -> bool:
        """Whether committed data would be dropped."""
        return self.lost_commits != 0

    def describe(self) -> str:
        """One line for an operator."""
        if self.lost_commits < 0:
            return "its write-ahead log has a damaged header: SQLite would ignore all of it"
        return (
            f"its write-ahead log is damaged after frame {self.valid_frames}: "
            f"{self.lost_commits} committed transactions after it cannot be read"
        )


def checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes), continuing from (s0, s1)."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & MASK
        s1 = (s1 + words[i + 1] + s0) & MASK
    return s0, s1


def scan(path: str) -> WalReport:
    """Read the WAL file ``path`` as SQLite would replay it (a missing or empty one is fine).

    Arguments:
        path: The ``-wal`` file of a database.

    """
    try:
        wal = open(path, "rb")  # noqa: SIM115 - closed below, whichever way it ends
    except FileNotFoundError:
        return WalReport(0, 0)
    with wal:
        return _scan(wal)


def _scan(wal: BinaryIO) -> WalReport:
    header = wal.read(HEADER.size)
    if len(header) < HEADER.size:
        return WalReport(0, 0)  # empty, or a header never completely written: nothing committed
    magic, _, page_size, _, salt1, salt2, sum1, sum2 = HEADER.unpack(header)
    big_endian = bool(magic & 1)
    valid_page_size = page_size in {1 << n for n in range(9, 17)}
    if (
        magic not in MAGIC
        or not valid_page_size
        or (sum1, sum2) != checksum(header[:24], big_endian, 0, 0)
    ):
        # Frames follow only after a header was written: any means a damaged header.
        return WalReport(0, -1 if wal.read(1) else 0)
    sums = (sum1, sum2)
    valid = 0
    while True:
        frame = wal.read(FRAME_HEADER.size + page_size)
        if len(frame) < FRAME_HEADER.size + page_size:
            return WalReport(valid, 0)  # the end: a torn last frame was never committed
        _, _, frame_salt1, frame_salt2, frame_sum1, frame_sum2 = FRAME_HEADER.unpack_from(frame)
        if (frame_salt1, frame_salt2) != (salt1, salt2):
            break  # a frame of an older generation of the log: the end of this one
        sums = checksum(frame[:8] + frame[FRAME_HEADER.size :], big_endian, *sums)
        if sums != (frame_sum1, frame_sum2):
            break
        valid += 1
    # The first bad frame itself may be a torn commit (never acknowledged): count
    # only the commit frames of this generation after it.
    lost = 0
    while True:
        frame = wal.read(FRAME_HEADER.size + page_size)
        if len(frame) < FRAME_HEADER.size + page_size:
            return WalReport(valid, lost)
        _, commit, frame_salt1, frame_salt2, _, _ = FRAME_HEADER.unpack_from(frame)
        if commit and (frame_salt1, frame_salt2) == (salt1, salt2):
            lost += 1
