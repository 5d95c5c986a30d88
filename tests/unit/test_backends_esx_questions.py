"""Questions, message events and power changes of one VM, in any order, against a model.

The rule (doc/source/faults.rst, "ESX"): a message id is one fault until the
VM's question is answered or the VM changes power state; a new question or
message after that is a new fault; a warning is a fault only when it names
an I/O error. The backend reads real pyVmomi update sets, one per step,
from a fake collector.
"""

from __future__ import annotations

import itertools

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from oslo_config import cfg
from pyVmomi import vim

from hypervisor_notifier.backends.esx import EsxBackend, translate
from hypervisor_notifier.conf import register_opts
from hypervisor_notifier.faults import Fault, FaultObservation
from tests.unit.test_backends_esx import BASELINE, FakeCollector, event, page_update, vm_update

MESSAGES = st.sampled_from(["msg.hbacommon.outofspace", "msg.hbacommon.locklost", "msg.other"])


class OneVm(RuleBasedStateMachine):
    """One running VM whose questions, messages and power the steps change."""

    @initialize()
    def start(self) -> None:
        conf = cfg.ConfigOpts()
        register_opts(conf)
        conf([])
        self.backend = EsxBackend(conf)
        self.backend._collector = self.backend._pc = FakeCollector()
        self.backend._si, self.backend._version = object(), ""
        self.keys = itertools.count(100)
        self.question_ids = itertools.count(1)
        self.faults: list[FaultObservation] = []
        self.step([*BASELINE])
        # The model: message ids told since the last answer or power change.
        self.told: set[str] = set()
        self.expected: list[tuple[Fault, str]] = []
        self.pending = False
        self.power = "poweredOn"

    def step(self, batch) -> None:
        self.backend._collector.batches = [batch]
        self.backend._wait(
            lambda o: self.faults.append(o) if isinstance(o, FaultObservation) else None
        )

    def expect(self, message_id: str, severity: str) -> None:
        io = message_id in translate.IO_MESSAGES
        if message_id in self.told or (severity == "warning" and not io):
            return
        self.told.add(message_id)
        self.expected.append((Fault.IO_ERROR if io else Fault.CONTROL_ERROR, message_id))

    def message_event(self, message_id: str, kind: str):
        found = event(kind, next(self.keys))
        found.message = "text"
        found.messageInfo = [vim.vm.Message(id=message_id, text="text")]
        return page_update(found)

    def question(self, message_id: str):
        message = vim.vm.Message(id=message_id, text="text")
        asked = vim.vm.QuestionInfo(id=str(next(self.question_ids)), text="", message=[message])
        return vm_update(**{"runtime.question": asked})

    @rule(message_id=MESSAGES)
    def ask(self, message_id: str) -> None:
        self.step([self.question(message_id)])
        self.pending = True
        self.expect(message_id, "question")

    @rule(message_id=MESSAGES)
    def ask_with_vcenter_message(self, message_id: str) -> None:
        # One update set: vCenter's message event and the question it is about.
        self.step(
            [self.message_event(message_id, "VmMessageErrorEvent"), self.question(message_id)]
        )
        self.pending = True
        self.expect(message_id, "error")

    @precondition(lambda self: self.pending)
    @rule()
    def answer(self) -> None:
        self.step([vm_update(**{"runtime.question": None})])
        self.pending = False
        self.told.clear()

    @rule(message_id=MESSAGES, severity=st.sampled_from(["error", "warning"]))
    def message(self, message_id: str, severity: str) -> None:
        kind = "VmMessageErrorEvent" if severity == "error" else "VmMessageWarningEvent"
        self.step([self.message_event(message_id, kind)])
        self.expect(message_id, severity)

    @rule()
    def power_change(self) -> None:
        self.power = "poweredOff" if self.power == "poweredOn" else "poweredOn"
        self.step([vm_update(**{"runtime.powerState": self.power})])
        self.told.clear()

    @invariant()
    def each_occurrence_is_one_fault_of_its_kind(self) -> None:
        if not hasattr(self, "faults"):
            return
        assert [(f.fault, f.detail) for f in self.faults] == self.expected


# No deadline: a loaded machine (shared CI) is no failure of the rule.
OneVm.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
test_one_vm_against_the_model = OneVm.TestCase
