"""The import rules of the package, read from its source: the layout is the architecture.

- ``conf/`` is a leaf: it imports nothing of the package but itself.
- The shared contract (events, wire, signing, tls, transport URLs, backoff,
  logs, fdwait, amqpframes) imports nothing of backends, the notifier, the consumer, cmd or conf.
- ``consumer/`` (the nova adapter included) reaches neither ``backends/`` nor
  ``notifier/``, not even through another module.
- ``backends/`` reaches nothing of ``notifier/``.
- The publisher knows nothing of backends.
- No module of the package, the benchmarks or the tests is over 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "hypervisor_notifier"
ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 400
CONTRACT = (
    "events",
    "payload",
    "faults",
    "host_events",
    "wire",
    "signing",
    "tls",
    "transport_url",
    "backoff",
    "logs",
    "fdwait",
    "amqpframes",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted((ROOT / PACKAGE).rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The package's modules ``name`` imports anywhere in its source (functions included)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in MODULES)
    return found - {name}


def reachable(name: str) -> set[str]:
    """Every package module importing ``name`` loads (its parent packages included)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        for target in imports_of(current):
            parts = target.split(".")
            for depth in range(1, len(parts) + 1):
                module = ".".join(parts[:depth])
                if module in MODULES and module not in seen:
                    seen.add(module)
                    todo.append(module)
    return seen - {name}


def under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def offending(sources: list[str], forbidden: tuple[str, ...], *, transitive: bool) -> list[str]:
    found = []
    for source in sources:
        targets = reachable(source) if transitive else imports_of(source)
        found += [f"{source} -> {t}" for t in sorted(targets) if under(t, *forbidden)]
    return found


def in_package(*packages: str) -> list[str]:
    return [name for name in MODULES if under(name, *packages)]


def test_the_rules_see_every_import():
    # The reader itself: the service's command reaches the publisher and a backend.
    assert "hypervisor_notifier.notifier.publisher" in reachable(
        "hypervisor_notifier.cmd.notifier"
    )
    assert under("hypervisor_notifier.conf.outbox", "hypervisor_notifier.conf")


def test_conf_is_a_leaf():
    conf = f"{PACKAGE}.conf"
    others = tuple(name for name in MODULES if not under(name, conf) and name != PACKAGE)
    assert offending(in_package(conf), others, transitive=False) == []


def test_the_shared_contract_imports_only_the_contract():
    contract = [f"{PACKAGE}.{name}" for name in CONTRACT]
    rooms = tuple(
        f"{PACKAGE}.{room}" for room in ("backends", "notifier", "consumer", "cmd", "conf")
    )
    assert offending(contract, rooms, transitive=True) == []


def test_the_consumer_reaches_neither_backends_nor_the_notifier():
    forbidden = (f"{PACKAGE}.backends", f"{PACKAGE}.notifier")
    assert offending(in_package(f"{PACKAGE}.consumer"), forbidden, transitive=True) == []


def test_backends_reach_nothing_of_the_notifier():
    forbidden = (f"{PACKAGE}.notifier",)
    assert offending(in_package(f"{PACKAGE}.backends"), forbidden, transitive=True) == []


def test_the_publisher_knows_nothing_of_backends():
    publisher = [f"{PACKAGE}.notifier.publisher"]
    assert offending(publisher, (f"{PACKAGE}.backends",), transitive=True) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_400_lines(name):
    assert len(MODULES[name].read_text().splitlines()) <= MAX_LINES


OTHER_MODULES = sorted(
    str(path.relative_to(ROOT))
    for folder in ("benchmarks", "tests")
    for path in (ROOT / folder).rglob("*.py")
)


@pytest.mark.parametrize("name", OTHER_MODULES)
def test_no_benchmark_or_test_module_is_over_400_lines(name):
    assert len((ROOT / name).read_text().splitlines()) <= MAX_LINES
