"""Waiting for readable descriptors: numbers above 1023, and eventlet's select-only module."""

from __future__ import annotations

import os
import select

import pytest

from hypervisor_notifier.fdwait import readable


@pytest.fixture
def high_pipe():
    """A pipe whose read end is descriptor 1500 (select.select refuses it)."""
    read, write = os.pipe()
    high = os.dup2(read, 1500)
    os.close(read)
    yield high, write
    os.close(high)
    os.close(write)


def test_a_descriptor_above_1023_is_waited_on(high_pipe):
    read, write = high_pipe
    assert readable([read], 0) == set()
    os.write(write, b"!")
    assert readable([read], 1.0) == {read}


def test_without_poll_as_under_eventlet_select_is_used(monkeypatch):
    read, write = os.pipe()
    try:
        monkeypatch.delattr(select, "poll")
        assert readable([read], 0) == set()
        os.write(write, b"!")
        assert readable([read], 1.0) == {read}
    finally:
        os.close(read)
        os.close(write)
