"""Preflight checks: whether a configuration can run the service on this host.

Each check returns :class:`Check` rows; :func:`run` runs them in order and
skips those whose prerequisite failed. Nothing here changes anything: the
hypervisor is opened as the service opens it (read-only unless ``[libvirt]
read_only = false``) and only listed; the broker is logged in to, and the
exchange and the host's queue are declared *passively* (a passive
declaration only asks whether they exist). Every detail is masked.
"""

from __future__ import annotations

import dataclasses
import enum
import getpass
import os
import threading
import time
from collections.abc import Sequence

import amqp
from oslo_config import cfg

from hypervisor_notifier import conf as config
from hypervisor_notifier import events, wire
from hypervisor_notifier.backends import MissingBinding, UnknownBackend, load_backend
from hypervisor_notifier.backends.base import Backend, BackendUnavailable, InstanceState
from hypervisor_notifier.notifier import broker as broker_settings
from hypervisor_notifier.notifier import outbox_schema
from hypervisor_notifier.transport_url import describe_error, mask_secrets

#: What may fail when talking to the broker (py-amqp raises both).
BROKER_ERRORS = (OSError, amqp.exceptions.AMQPError)


class Result(enum.Enum):
    """The outcome of one check, and the exit status it asks for."""

    OK = "ok"
    SKIPPED = "skipped"
    WARNING = "warning"
    FAILURE = "failure"

    @property
    def exit_status(self) -> int:
        """0 for ok and skipped, 1 for a warning, 2 for a failure (as nova-status)."""
        return {"warning": 1, "failure": 2}.get(self.value, 0)


@dataclasses.dataclass(frozen=True)
class Check:
    """One row of the preflight's table.

    Arguments:
        name: What was checked.
        result: How it went.
        detail: One line: what was found, or what is wrong and where. Masked.

    """

    name: str
    result: Result
    detail: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", mask_secrets(self.detail))


def exit_status(checks: Sequence[Check]) -> int:
    """The worst result's exit status: 0 all fine, 1 a warning, 2 a failure."""
    return max((check.result.exit_status for check in checks), default=0)


class _ListingProbe:
    """A backend listener that lists the instances once, at the first resync."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.done = threading.Event()
        self.instances: list[InstanceState] = []
        self.error: str | None = None

    def on_resync(self, reason: str) -> None:
        try:
            self.instances = self.backend.list_instances()
        except BackendUnavailable as exc:
            self.error = describe_error(exc)
        finally:
            self.done.set()

    def on_events(self, observations: list[events.Observation]) -> None:
        """Events are not what the preflight is after."""

    def on_disconnected(self, reason: str) -> None:
        """A lost connection shows as the backend's problem."""


def check_hypervisor(backend: Backend, timeout: float) -> Check:
    """Connect the backend as the service does, list the instances once, close.

    The backend retries a failed connection forever; its first failure (its
    ``problem`` changing from the initial one) is the answer.
    """
    name = f"hypervisor ({backend.name})"
    probe = _ListingProbe(backend)
    initial_problem = backend.problem
    deadline = time.monotonic() + timeout
    backend.connect(probe)
    try:
        while not probe.done.wait(0.05):
            problem = backend.problem
            if problem is not None and problem != initial_problem:
                return Check(name, Result.FAILURE, problem)
            if time.monotonic() > deadline:
                return Check(name, Result.FAILURE, f"no answer within {timeout:g} s: {problem}")
    finally:
        backend.close()
    if probe.error is not None:
        return Check(name, Result.FAILURE, f"connected, but listing failed: {probe.error}")
    running = sum(1 for i in probe.instances if i.power_state is events.PowerState.RUNNING)
    return Check(
        name, Result.OK, f"connected and listed: {len(probe.instances)} guests, {running} running"
    )


def check_outbox(conf: cfg.ConfigOpts) -> Check:
    """What ``[outbox] path`` holds (as the service judges it at start); whether it is writable."""
    path = conf.outbox.path
    try:
        found = outbox_schema.inspect(path)
    except OSError as exc:
        return Check("outbox", Result.WARNING, f"[outbox] path {path}: {exc}: the service "
                     "would keep events in memory only")  # fmt: skip
    if found.refused:
        # The service refuses to start on it: the same line.
        return Check("outbox", Result.FAILURE, f"[outbox] path {path} {found.description}")
    if found.kind is outbox_schema.Kind.DAMAGED:
        return Check(
            "outbox",
            Result.WARNING,
            f"[outbox] path {path} {found.description}: the service would keep it aside "
            "for inspection and start a new one",
        )
    target = path if os.path.exists(path) else os.path.dirname(path) or "."
    user = getpass.getuser()
    if not os.access(target, os.W_OK):
        return Check(
            "outbox",
            Result.WARNING,
            f"[outbox] path: {target} is not writable by {user} (or missing): the service "
            "would keep events in memory only",
        )
    if found.kind is outbox_schema.Kind.MISSING:
        return Check("outbox", Result.OK, f"{path}: {found.description}; writable by {user}")
    upgraded = found.version != outbox_schema.SCHEMA_VERSION
    return Check(
        "outbox",
        Result.OK,
        f"{path} {found.description}"
        + (f" (upgraded to {outbox_schema.SCHEMA_VERSION} at start)" if upgraded else "")
        + f"; writable by {user}",
    )


def check_broker(conf: cfg.ConfigOpts, timeout: float) -> list[Check]:
    """Log in to each broker of the transport URL; check the exchange and host queue on one."""
    try:
        settings = broker_settings.from_conf(conf)
    except config.ConfigError as exc:
        return [Check("broker", Result.FAILURE, str(exc))]
    access = settings.access
    url = access.url
    checks, reachable = [], None
    for broker in url.hosts:
        name = f"broker {broker.address}"
        connection = amqp.Connection(
            host=broker.address,
            userid=broker.username,
            password=broker.password,
            virtual_host=url.virtual_host,
            connect_timeout=timeout,
            client_properties={"connection_name": f"hypervisor-notifier-status {conf.host}"},
            ssl=access.amqp_ssl(broker),
        )
        try:
            connection.connect()
        except BROKER_ERRORS as exc:
            connection.collect()
            checks.append(Check(name, Result.FAILURE, f"{broker.username}: {describe_error(exc)}"))
            continue
        checks.append(
            Check(name, Result.OK, f"{broker.username} logged in to vhost {url.virtual_host}")
        )
        if reachable is None:
            reachable = connection
        else:
            _close(connection)
    if reachable is None:
        return checks
    if len(url.hosts) > 1:
        # Failing over, the service still publishes: a broker down is a warning.
        checks = [
            dataclasses.replace(c, result=Result.WARNING) if c.result is Result.FAILURE else c
            for c in checks
        ]
    try:
        checks.extend(_check_exchange_and_queue(reachable, conf))
    except BROKER_ERRORS as exc:  # the connection broke after the login
        checks.append(Check("exchange", Result.FAILURE, describe_error(exc)))
    finally:
        _close(reachable)
    return checks


def _close(connection: amqp.Connection) -> None:
    """Close politely; a connection that broke is only released."""
    try:
        connection.close()
    except BROKER_ERRORS:
        connection.collect()


def _check_exchange_and_queue(connection: amqp.Connection, conf: cfg.ConfigOpts) -> list[Check]:
    exchange = conf.publisher.exchange
    try:
        # A failed passive declaration closes its channel: one channel per question.
        connection.channel().exchange_declare(exchange, "topic", passive=True)
    except amqp.exceptions.NotFound:
        return [
            Check(
                "exchange",
                Result.WARNING,
                f"{exchange!r} does not exist yet: the service declares it when it starts; "
                "subscribers started before that fail to bind",
            )
        ]
    checks = [Check("exchange", Result.OK, f"{exchange!r} exists")]
    if not conf.publisher.declare_host_queue:
        return checks
    queue = wire.host_queue_name(conf.publisher.topic, conf.host)
    try:
        _, waiting, consumers = connection.channel().queue_declare(queue, passive=True)
    except amqp.exceptions.NotFound:
        checks.append(
            Check(
                "host queue",
                Result.OK,
                f"{queue!r} not declared yet: the service declares it when it starts",
            )
        )
        return checks
    detail = f"{queue!r}: {waiting} events waiting, {consumers} consumers"
    if waiting and not consumers:
        checks.append(
            Check("host queue", Result.WARNING, detail + ": is this host's subscriber running?")
        )
    else:
        checks.append(Check("host queue", Result.OK, detail))
    return checks


def run(config_args: Sequence[str], *, prog: str, timeout: float) -> list[Check]:
    """Run every check against the configuration ``config_args`` (oslo.config arguments)."""
    try:
        conf = config.load(config_args, prog=prog)
    except config.ConfigError as exc:
        failures = [Check("configuration", Result.FAILURE, line) for line in exc.problems]
        return [*failures, *_skipped("configuration")]
    files = ", ".join(conf.config_file) or "no config file, defaults"
    checks = [
        Check("configuration", Result.OK, f"{files}; host {conf.host}, backend {conf.backend}")
    ]
    backend, problem = _load(conf)
    if backend is None:
        checks.append(Check("backend", Result.FAILURE, problem))
        checks.append(Check("hypervisor", Result.SKIPPED, "needs a backend"))
    else:
        checks.append(Check("backend", Result.OK, f"{backend.name} loaded"))
        checks.append(check_hypervisor(backend, timeout))
    checks.extend(check_broker(conf, timeout))
    checks.append(check_outbox(conf))
    return checks


def _load(conf: cfg.ConfigOpts) -> tuple[Backend | None, str]:
    """The configured backend, or None and why not (as the service would say it)."""
    try:
        return load_backend(conf), ""
    except (UnknownBackend, config.ConfigError) as exc:
        return None, str(exc)
    except MissingBinding as exc:
        return None, str(exc)


def _skipped(prerequisite: str) -> list[Check]:
    names = ("backend", "hypervisor", "broker", "outbox")
    return [Check(name, Result.SKIPPED, f"needs a valid {prerequisite}") for name in names]
