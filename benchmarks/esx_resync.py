"""The resync part of the ESX benchmark: ``list_instances()`` against naive property reads.

Not a script of its own: ``esx.py`` runs it after the latency part (its
docstring says what is measured).
"""

from __future__ import annotations

import collections
import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from esx_sim import simulator
from harness import progress
from oslo_config import cfg

from hypervisor_notifier.backends.esx import EsxBackend
from hypervisor_notifier.conf import register_opts


class RpcCounter:
    """Count (and time) every SOAP request of a pyVmomi session, by method and property."""

    def __init__(self, si: Any) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.seconds: collections.Counter[str] = collections.Counter()
        stub = si._stub
        invoke = stub.InvokeMethod

        def counting(mo: Any, info: Any, args: Any, outer_stub: Any = None) -> Any:
            # A property read is a Fetch whose info names the property.
            key = f"Fetch {info.name}" if info.wsdlName == "Fetch" else info.wsdlName
            started = time.perf_counter()
            try:
                return invoke(mo, info, args, outer_stub)
            finally:
                self.calls[key] += 1
                self.seconds[key] += time.perf_counter() - started

        stub.InvokeMethod = counting  # the accessors call self.InvokeMethod too

    def take(self) -> tuple[collections.Counter[str], collections.Counter[str]]:
        taken = self.calls.copy(), self.seconds.copy()
        self.calls.clear()
        self.seconds.clear()
        return taken


@dataclasses.dataclass
class Way:
    """One way of listing: milliseconds of each run, RPCs of one run by key, and their time."""

    times_ms: list[float]
    calls: collections.Counter[str]
    seconds: collections.Counter[str]

    @property
    def ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def rpcs(self) -> int:
        return sum(self.calls.values())


def timed(call: Callable[[], set[tuple[str, str, str]]], repeats: int, counter: RpcCounter) -> Way:
    """Time ``repeats`` runs; the RPCs are those of the last run (checked equal across runs)."""
    times, counts, listed = [], [], []
    for _ in range(repeats):
        counter.take()
        started = time.perf_counter()
        listed.append(call())
        times.append((time.perf_counter() - started) * 1000)
        counts.append(counter.take())
    if any(rows != listed[0] for rows in listed) or any(c[0] != counts[0][0] for c in counts):
        raise RuntimeError("runs listed different VMs or made different calls")
    return Way(times, *counts[-1])


def backend_for(sim: Any) -> EsxBackend:
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf([], default_config_files=[], default_config_dirs=[])
    for name, value in sim.config().items():
        conf.set_override(name, value, group="esx")
    return EsxBackend(conf)


@dataclasses.dataclass
class Resync:
    """The resync part's figures."""

    vms: int
    started_s: float
    listed: int
    watch_ms: float
    backend: Way
    naive: Way


def measure_resync(binary: str, workdir: Path, vms: int, repeats: int) -> Resync:
    with simulator(binary, workdir / "resync", vms) as (sim, started_s):
        progress(f"resync: simulator with {vms:,} VMs started in {started_s:.2f} s")
        backend = backend_for(sim)
        backend._login()
        try:
            counter = RpcCounter(backend._si)
            started = time.perf_counter()
            pc_filter = backend._watch()  # the view, the event collector, the filter, a baseline
            watch_ms = (time.perf_counter() - started) * 1000
            view = backend._view

            def backends_way() -> set[tuple[str, str, str]]:
                return {
                    (i.instance_uuid, i.instance_name, i.state) for i in backend.list_instances()
                }

            def naive_way() -> set[tuple[str, str, str]]:
                return {
                    (vm.config.instanceUuid, vm.name, str(vm.runtime.powerState))
                    for vm in view.view
                }

            listed = backends_way()  # untimed: the first run of the path
            progress(f"resync: list_instances(), {repeats} runs")
            backend_row = timed(backends_way, repeats, counter)
            progress(f"resync: naive, {repeats} runs")
            naive_row = timed(naive_way, repeats, counter)
            if naive_way() != listed:
                raise RuntimeError("the naive way listed other VMs than list_instances()")
            pc_filter.Destroy()
        finally:
            backend._release()
    return Resync(vms, started_s, len(listed), watch_ms, backend_row, naive_row)


def report_resync(figures: Resync, repeats: int) -> list[str]:
    speedup = figures.naive.ms / figures.backend.ms
    lines = [
        f"2. resync, {figures.vms:,} VMs: simulator started in {figures.started_s:.2f} s; "
        f"_watch() (view, event collector, filter, baseline) {figures.watch_ms:.0f} ms; "
        f"{figures.listed:,} VMs listed",
        f"  {f'way (median of {repeats} runs)':<66}{'ms':>8}{'RPCs':>8}",
    ]
    for label, way in (
        ("list_instances(): one RetrievePropertiesEx over the view", figures.backend),
        ("naive: view.view + 3 property reads per VM", figures.naive),
    ):
        lines.append(f"  {label:<66}{way.ms:8.1f}{way.rpcs:8d}")
    lines.append(f"  {'speedup':<66}{speedup:8.1f} x")
    for label, way in (("list_instances()", figures.backend), ("naive", figures.naive)):
        spread = f"{min(way.times_ms):.1f}-{max(way.times_ms):.1f}"
        parts = ", ".join(
            f"{key} {way.calls[key]} ({way.seconds[key] * 1000:.0f} ms)"
            for key in sorted(way.calls)
        )
        lines.append(f"  {label}: runs {spread} ms; RPCs of the last run: {parts}")
    return lines
