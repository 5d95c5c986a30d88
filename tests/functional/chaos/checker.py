"""The chaos test's history checker: what the hypervisor did against what the consumer got.

Pure (no broker, no libvirt, no clock), so it is unit-tested on small
made-up histories. It is given:

- each guest's operations history: its state when first seen, then every
  call the churn made on it, in order, with the transitions the hypervisor
  reports for it and the state it left the guest in;
- the events the service accepted (it published them, or they were left in
  its outbox), with each time the broker received one and whether it routed
  it to the host queue;
- when each fault began and ended;
- what the consumer delivered, in order, and the event_ids it received but
  dropped as stale (an older event of an instance arriving after a newer one).

and it reports, with its counts:

- **lost**: an accepted event that never reached the consumer. A stale drop
  counts as received only for an event published more than once (a resend
  after a nack or a return, arriving behind later events); an event
  published once and dropped as stale was never delivered because its
  ``seq`` went backwards: lost too. The injector's faults never make the
  broker discard what it confirmed (it deletes the host queue only drained,
  with the service paused; it sets a limit's overflow before the limit), so
  nothing accepted may be missing; an event the broker could not route must
  be sent again.
- **duplicates** delivered, and an instance's ``seq`` not increasing in
  delivery order.
- **order**: each guest's delivered events must be explained by its history
  in order. A pushed event matches the earliest operation (not yet matched)
  that reports its transition; a resync event matches the earliest state,
  from where the consumer stands, equal to its power state (``vanished``:
  the earliest state after an undefine). A pushed event
  may echo an operation a resync already covered (it happened between the
  listing and the callback), never an operation before the last one matched.
- **final state**: the last state delivered for each guest is its state
  after its last operation (nothing delivered is right only for a guest
  that is off; ``vanished`` only for one undefined).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Iterable

from hypervisor_notifier.events import LifecycleEvent, PowerState, Transition

EXAMPLES = 5
#: A resync's report of a guest no listing shows any more.
VANISHED = Transition.VANISHED.value


@dataclasses.dataclass(frozen=True)
class Seen:
    """An event, reduced to what the checker compares.

    Arguments:
        event_id: Its stable id.
        instance_uuid: The guest.
        seq: The service's per-host sequence number.
        transition: The transition's wire name (``paused``...).
        power_state: The power state it reports (nova's integer).
        resync: Found by a resync rather than pushed by the hypervisor.

    """

    event_id: str
    instance_uuid: str
    seq: int
    transition: str
    power_state: int
    resync: bool = False

    @classmethod
    def of(cls, event: LifecycleEvent) -> Seen:
        """The :class:`Seen` of a decoded event."""
        return cls(
            event.event_id,
            event.instance_uuid,
            event.seq,
            event.transition.value,
            int(event.power_state),
            event.resync,
        )

    def __str__(self) -> str:
        kind = "resync " if self.resync else ""
        return f"{kind}{self.transition} seq={self.seq} of {self.instance_uuid}"


@dataclasses.dataclass(frozen=True)
class Operation:
    """One call on a guest and its outcome.

    Arguments:
        action: The call (``suspend``, ``destroy``...).
        transitions: What the hypervisor reports for it, in order (none if it failed).
        state_after: The guest's power state after it.
        ok: False if the hypervisor refused the call.

    """

    action: str
    transitions: tuple[str, ...]
    state_after: int
    ok: bool = True


@dataclasses.dataclass
class Guest:
    """A guest's history.

    Arguments:
        initial: Its power state when the history starts.
        operations: The calls made on it, in order.

    """

    initial: int = PowerState.SHUTDOWN
    operations: list[Operation] = dataclasses.field(default_factory=list)

    @property
    def final(self) -> int:
        """Its power state after the last operation."""
        return self.operations[-1].state_after if self.operations else self.initial

    def gone_after(self, index: int) -> bool:
        """Whether operation ``index`` undefined the guest (no listing shows it then)."""
        operation = self.operations[index]
        return operation.action == "undefine" and operation.ok


@dataclasses.dataclass(frozen=True)
class Window:
    """When a fault began and ended (any clock, the one of :class:`Publish` too).

    Arguments:
        kind: What it was (``queue_delete``...).
        start: When it began.
        end: When it was undone.

    """

    kind: str
    start: float
    end: float


@dataclasses.dataclass(frozen=True)
class Publish:
    """One time the broker received an event.

    Arguments:
        at: When.
        routed: Whether the broker routed it to the host queue.

    """

    at: float
    routed: bool = True


@dataclasses.dataclass
class History:
    """Everything the checker compares.

    Arguments:
        guests: instance_uuid -> its history.
        accepted: event_id -> each event the service accepted.
        publishes: event_id -> each time the broker received it, in order.
        delivered: What the consumer's callback got, in order.
        stale: The event_ids the consumer received and dropped as stale.
        duplicates_filtered: Redeliveries the consumer filtered out.
        faults: The faults injected, in order.
        settle_seconds: From the end of the faults to the service settled;
            None if it did not settle.

    """

    guests: dict[str, Guest]
    accepted: dict[str, Seen]
    publishes: dict[str, list[Publish]]
    delivered: list[Seen]
    stale: list[str] = dataclasses.field(default_factory=list)
    duplicates_filtered: int = 0
    faults: list[Window] = dataclasses.field(default_factory=list)
    settle_seconds: float | None = 0.0


@dataclasses.dataclass
class Report:
    """The checker's verdict: counts, and one line per kind of problem found."""

    counts: dict[str, object]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = [f"  {name}: {value}" for name, value in self.counts.items()]
        lines += [f"  PROBLEM {problem}" for problem in self.problems] or ["  no problem found"]
        return "chaos history check:\n" + "\n".join(lines)


def _examples(items: Iterable[object]) -> str:
    items = list(items)
    shown = "; ".join(str(item) for item in items[:EXAMPLES])
    return shown + ("; ..." if len(items) > EXAMPLES else "")


def _sent(publishes: list[Publish]) -> str:
    """How an event was published: "never published", "published 2x, 1 unroutable"."""
    if not publishes:
        return "never published"
    unroutable = sum(1 for p in publishes if not p.routed)
    return f"published {len(publishes)}x" + (f", {unroutable} unroutable" if unroutable else "")


def _explain(guest: Guest, events: list[Seen]) -> Seen | None:
    """The first of a guest's delivered events its history cannot explain in order, or None."""
    states = [guest.initial] + [op.state_after for op in guest.operations]
    pushes = [(i, t) for i, op in enumerate(guest.operations) for t in op.transitions]
    at_state = next_push = 0
    for event in events:
        if event.resync and event.transition == VANISHED:
            # A resync that no longer lists it: it was undefined (states[j] follows op j - 1).
            found = next(
                (j for j in range(max(at_state, 1), len(states)) if guest.gone_after(j - 1)), None
            )
            if found is None:
                return event
            at_state = found
        elif event.resync:
            found = next(
                (j for j in range(at_state, len(states)) if states[j] == event.power_state), None
            )
            if found is None:
                return event
            at_state = found
        else:
            match = next(
                (q for q in range(next_push, len(pushes)) if pushes[q][1] == event.transition),
                None,
            )
            if match is None:
                return event
            next_push = match + 1
            # An echo of an operation a resync already reported leaves the state where it is.
            at_state = max(at_state, pushes[match][0] + 1)
    return None


def _charge(history: History, event_ids: Iterable[str]) -> dict[str, int]:
    """How many of ``event_ids`` the last fault begun before each's first publish is charged."""
    charged: collections.Counter[str] = collections.Counter()
    for event_id in event_ids:
        sent = history.publishes.get(event_id)
        begun = [f.kind for f in history.faults if sent and f.start <= sent[0].at]
        charged["never published" if not sent else begun[-1] if begun else "no fault"] += 1
    return dict(sorted(charged.items()))


def check(history: History) -> Report:
    """Compare the history with what the consumer received; see the module's docstring."""
    problems: list[str] = []
    delivered_ids = collections.Counter(event.event_id for event in history.delivered)
    stale = set(history.stale)
    resent_stale = {i for i in stale if len(history.publishes.get(i, [])) > 1}
    never = [e for i, e in history.accepted.items() if i not in delivered_ids and i not in stale]
    if never:
        described = [f"{e} ({_sent(history.publishes.get(e.event_id, []))})" for e in never]
        problems.append(
            f"lost: {len(never)} accepted events never reached the consumer: "
            f"{_examples(described)}"
        )
    backwards = [history.accepted.get(i, i) for i in sorted(stale - resent_stale)]
    if backwards:
        problems.append(
            f"lost: {len(backwards)} events published once were dropped as stale (their seq "
            f"went backwards): {_examples(backwards)}"
        )
    twice = [i for i, count in delivered_ids.items() if count > 1]
    if twice:
        problems.append(f"duplicates: {len(twice)} events delivered twice: {_examples(twice)}")

    per_instance: dict[str, list[Seen]] = collections.defaultdict(list)
    for event in history.delivered:
        per_instance[event.instance_uuid].append(event)
    unordered = [
        uuid
        for uuid, events in per_instance.items()
        if any(a.seq >= b.seq for a, b in itertools.pairwise(events))
    ]
    if unordered:
        problems.append(f"seq not increasing in delivery order for: {_examples(unordered)}")

    unexplained = []
    wrong_final = []
    for uuid, guest in history.guests.items():
        events = per_instance.get(uuid, [])
        odd = _explain(guest, events)
        if odd is not None:
            done = [op.action for op in guest.operations]
            unexplained.append(f"{odd} (operations: {', '.join(done)})")
        held = events[-1].power_state if events else None
        # An undefined guest is off, or reported vanished by a resync since.
        vanished = bool(guest.operations) and guest.gone_after(-1) and held == PowerState.NOSTATE
        if (
            held != guest.final
            and not vanished
            and not (held is None and guest.final == PowerState.SHUTDOWN)
        ):
            named = PowerState(held).name if held is not None else "nothing"
            wrong_final.append(f"{uuid} held {named}, is {PowerState(guest.final).name}")
    if unexplained:
        problems.append(
            f"order: {len(unexplained)} guests got an event their history does not explain "
            f"in order: {_examples(unexplained)}"
        )
    if wrong_final:
        problems.append(f"final state wrong for {len(wrong_final)}: {_examples(wrong_final)}")
    if history.settle_seconds is None:
        problems.append("the service did not settle after the faults")

    operations = [op for guest in history.guests.values() for op in guest.operations]
    transitions = sum(len(op.transitions) for op in operations)
    pushed_delivered = sum(
        1 for e in history.delivered if e.instance_uuid in history.guests and not e.resync
    )
    counts: dict[str, object] = {
        "guests": len(history.guests),
        "operations": len(operations),
        "failed operations": sum(1 for op in operations if not op.ok),
        "transitions not delivered (no service watching, or a resync covered them)": (
            transitions - pushed_delivered
        ),
        "events accepted": len(history.accepted),
        "of which left in the outbox unpublished": sum(
            1 for i in history.accepted if not history.publishes.get(i)
        ),
        "publishes traced": sum(len(sent) for sent in history.publishes.values()),
        "of which unroutable": sum(
            1 for sent in history.publishes.values() for p in sent if not p.routed
        ),
        "events published more than once": sum(
            1 for sent in history.publishes.values() if len(sent) > 1
        ),
        "delivered": len(history.delivered),
        "duplicates filtered": history.duplicates_filtered,
        "stale resends filtered": len(resent_stale),
        "lost": len(never) + len(backwards),
        "lost, by the last fault begun before their first publish": _charge(
            history, [e.event_id for e in never] + sorted(stale - resent_stale)
        ),
        "faults": dict(sorted(collections.Counter(f.kind for f in history.faults).items())),
        "time to settle (s)": (
            "did not settle"
            if history.settle_seconds is None
            else round(history.settle_seconds, 1)
        ),
    }
    return Report(counts, problems)
