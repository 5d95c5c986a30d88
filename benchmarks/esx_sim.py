"""The vSphere simulator for the ESX benchmarks: the tests' build of govmomi's, started here.

Not a benchmark: ``esx.py`` and ``esx_resync.py`` use it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from pyVim import connect

REPO = Path(__file__).resolve().parents[1]


def load_vcsim() -> ModuleType:
    """``tests/functional/vcsim.py``, by path: the benchmarks do not import the tests package."""
    spec = importlib.util.spec_from_file_location("vcsim", REPO / "tests/functional/vcsim.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vcsim = load_vcsim()


@contextlib.contextmanager
def simulator(binary: str, directory: Path, vms: int) -> Iterator[tuple[Any, float]]:
    """A started simulator with ``vms`` VMs, and how long it took to start; stopped after."""
    directory.mkdir()
    sim = vcsim.Simulator(binary, directory, vms=vms)
    started = time.perf_counter()
    try:
        sim.start()
        yield sim, time.perf_counter() - started
    finally:
        sim.stop()


@contextlib.contextmanager
def session(sim: Any) -> Iterator[Any]:
    """A pyVmomi session of this process; logged out after."""
    si = sim.session()
    try:
        yield si
    finally:
        with contextlib.suppress(Exception):
            connect.Disconnect(si)
