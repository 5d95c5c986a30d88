"""devstack/plugin.sh: its phases, run as devstack runs them, and what they leave behind.

``tests/devstack/harness.sh`` sources devstack/settings, then plugin.sh once
per phase. Starting services and installing packages are recorded, not
done; everything else is real: the files written, and with DEVSTACK_DIR
pointing to a devstack checkout, devstack's own functions (iniset, iniget,
setup_develop, is_service_enabled, ...) instead of tests/devstack/standins.sh.
The devstack steps between the phases are done here as devstack does them:
``start_nova_compute`` copies $NOVA_CONF to $NOVA_CPU_CONF after post-config.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from hypervisor_notifier import conf
from hypervisor_notifier.signing import Signer
from hypervisor_notifier.transport_url import TransportURL

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "tests/devstack/harness.sh"
RABBIT_PASSWORD = "devstack-rabbit-pw"
SERVICE_PASSWORD = "devstack-service-pw"
#: What every node derives from SERVICE_PASSWORD.
SIGNING_KEY = hashlib.sha256(f"hypervisor-notifier:{SERVICE_PASSWORD}".encode()).hexdigest()
NOVA_URL = f"rabbit://stackrabbit:{RABBIT_PASSWORD}@10.0.0.5:5672/"

#: Records how the plugin called tools/rabbitmq-users.sh, in place of the real
#: script (which would run rabbitmqctl against this machine's broker).
RABBIT_USERS_STANDIN = """#!/bin/bash
printf '%q ' rabbitmq-users "RABBITMQCTL=$RABBITMQCTL" "HN_EXCHANGE=$HN_EXCHANGE" \\
    "HN_TOPIC=$HN_TOPIC" "$@" >> "$HN_CALLS"
echo >> "$HN_CALLS"
"""


def new_ini() -> configparser.ConfigParser:
    """A parser where [DEFAULT] is a section like the others, as in oslo.config files."""
    ini = configparser.ConfigParser(interpolation=None, default_section="\0")
    ini.optionxform = str  # type: ignore[assignment,method-assign]
    return ini


def read_ini(path: Path) -> configparser.ConfigParser:
    ini = new_ini()
    assert ini.read(path), f"{path} was not written"
    return ini


class Devstack:
    """A devstack host in ``root``: nova's config, the plugin's directories, recorded calls."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nova_conf = root / "etc/nova/nova.conf"
        self.nova_cpu_conf = root / "etc/nova/nova-cpu.conf"
        self.conf_dir = root / "etc/hypervisor-notifier"
        self.conf = self.conf_dir / "hypervisor-notifier.conf"
        self.state_dir = root / "data/hypervisor-notifier"
        self.bin_dir = root / "venv/bin"
        self.calls_file = root / "calls"
        self.users_script = root / "rabbitmq-users.sh"
        self.users_script.write_text(RABBIT_USERS_STANDIN)
        self.nova_conf.parent.mkdir(parents=True)
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(root),
            "DEST": str(root / "opt/stack"),
            "DATA_DIR": str(root / "data"),
            "STACK_USER": os.environ.get("USER", "root"),
            "NOVA_CONF": str(self.nova_conf),
            "NOVA_CPU_CONF": str(self.nova_cpu_conf),
            "LIBVIRT_GROUP": "libvirt",
            "RABBIT_PASSWORD": RABBIT_PASSWORD,
            "SERVICE_PASSWORD": SERVICE_PASSWORD,
            "ENABLED_SERVICES": "rabbit,n-api,n-cpu",
            "GLOBAL_VENV": "True",
            "DEVSTACK_VENV": str(root / "venv"),
            "os_PACKAGE": "deb",
            "HN_CALLS": str(self.calls_file),
            "HYPERVISOR_NOTIFIER_DIR": str(REPO),
            "HYPERVISOR_NOTIFIER_CONF_DIR": str(self.conf_dir),
            "HYPERVISOR_NOTIFIER_RABBIT_USERS_SCRIPT": str(self.users_script),
        }
        if os.environ.get("DEVSTACK_DIR"):
            self.env["DEVSTACK_DIR"] = os.environ["DEVSTACK_DIR"]

    def write_nova_conf(self, **sections: dict[str, str]) -> None:
        ini = new_ini()
        ini.read_dict(sections)
        with self.nova_conf.open("w") as file:
            ini.write(file)

    def run(self, *steps: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the plugin's ``steps`` (``stack:install``, ``unstack``, ...) in one shell."""
        result = subprocess.run(
            ["bash", str(HARNESS), *steps],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        helpers = self.env.get("DEVSTACK_DIR", "tests/devstack/standins.sh")
        assert f"harness: helpers from {helpers}\n" in result.stdout, result.stdout
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def stack(self) -> None:
        """install, post-config, devstack starting n-cpu, extra."""
        self.run("stack:install", "stack:post-config")
        shutil.copy(self.nova_conf, self.nova_cpu_conf)
        self.run("stack:extra")

    def calls(self, name: str) -> list[list[str]]:
        """The recorded calls of ``name``, each as its words."""
        if not self.calls_file.exists():
            return []
        lines = self.calls_file.read_text().splitlines()
        return [shlex.split(line)[1:] for line in lines if line.split(" ", 1)[0] == name]


@pytest.fixture
def devstack(tmp_path: Path) -> Callable[..., Devstack]:
    def make(**env: str) -> Devstack:
        host = Devstack(tmp_path)
        host.env.update(env)
        return host

    return make


LIBVIRT_NOVA = {
    "DEFAULT": {
        "compute_driver": "libvirt.LibvirtDriver",
        "transport_url": NOVA_URL,
        "host": "compute-hn7",
    },
    "libvirt": {"virt_type": "qemu"},
}


def test_libvirt_host_with_nova_consumer(devstack):
    host = devstack(HYPERVISOR_NOTIFIER_NOVA_CONSUMER="True")
    host.write_nova_conf(**LIBVIRT_NOVA)

    host.stack()

    # stack install: the bindep packages, then the package with both extras.
    assert host.calls("install_bindep") == [[f"{REPO}/bindep.txt"]]
    assert host.calls("pip_install") == [["-e", f"{REPO}[libvirt,esx]"]]
    # post-config: least-privilege users where the broker runs...
    rabbit_env = [
        "RABBITMQCTL=sudo rabbitmqctl",
        "HN_EXCHANGE=hypervisor",
        "HN_TOPIC=hypervisor_events",
    ]
    assert host.calls("rabbitmq-users") == [
        [*rabbit_env, "notifier", "hypervisor-notifier", RABBIT_PASSWORD, "/"],
        [*rabbit_env, "consumer", "nova-hypervisor-events", RABBIT_PASSWORD, "/"],
    ]
    # ... the notifier's config, from nova's ...
    ini = read_ini(host.conf)
    assert dict(ini["DEFAULT"]) == {"host": "compute-hn7", "backend": "libvirt"}
    assert dict(ini["libvirt"]) == {"connection_uri": "qemu:///system"}
    assert dict(ini["publisher"]) == {
        "transport_url": f"rabbit://hypervisor-notifier:{RABBIT_PASSWORD}@10.0.0.5:5672/",
        "exchange": "hypervisor",
        "topic": "hypervisor_events",
    }
    assert ini["outbox"]["path"] == str(host.state_dir / "outbox.sqlite")
    assert host.conf.stat().st_mode & 0o077 == 0, "the config holds a password"
    assert host.state_dir.is_dir()
    loaded = conf.load(["--config-file", str(host.conf)], prog="hypervisor-notifier")
    assert (loaded.host, loaded.health.port) == ("compute-hn7", 9324)
    # ... and nova's switch, which n-cpu's config inherits.
    nova_group = dict(read_ini(host.nova_cpu_conf)["hypervisor_notifier"])
    assert nova_group == {
        "source": "bus",
        "transport_url": f"rabbit://nova-hypervisor-events:{RABBIT_PASSWORD}@10.0.0.5:5672/",
        "exchange": "hypervisor",
        "topic": "hypervisor_events",
        "key": SIGNING_KEY,
    }
    # Signed with the key nova verifies with; a working key for both sides.
    assert ini["signing"]["key"] == SIGNING_KEY
    assert Signer.from_conf(loaded.signing) is not None
    # extra: the notifier, and n-cpu again as the wrapper, in the libvirt group.
    assert host.calls("run_process") == [
        ["hypervisor-notifier", f"{host.bin_dir}/hypervisor-notifier --config-file {host.conf}"],
        [
            "n-cpu",
            f"{host.bin_dir}/hypervisor-notifier-nova-compute --config-file {host.nova_cpu_conf}",
            "libvirt",
        ],
    ]
    assert host.calls("stop_process") == [["n-cpu"]]

    host.run("unstack")
    assert host.calls("stop_process") == [["n-cpu"], ["hypervisor-notifier"]]

    host.run("unstack", "clean")
    assert not host.conf_dir.exists()
    assert not host.state_dir.exists()
    assert host.nova_conf.exists()


def test_vmware_host_gets_the_esx_backend_from_nova_vmware_options(devstack):
    host = devstack(HYPERVISOR_NOTIFIER_STOPPED_HOLD="3")
    host.write_nova_conf(
        DEFAULT={"compute_driver": "vmwareapi.VMwareVCDriver", "transport_url": NOVA_URL},
        vmware={
            "host_ip": "vc.example.org",
            "host_username": "administrator@vsphere.local",
            "host_password": "vc-secret",
            "cluster_name": "cluster1",
            "insecure": "True",
        },
    )

    host.stack()

    ini = read_ini(host.conf)
    assert ini["DEFAULT"]["backend"] == "esx"
    assert dict(ini["esx"]) == {
        "host": "vc.example.org",
        "username": "administrator@vsphere.local",
        "password": "vc-secret",
        "cluster": "cluster1",
        "insecure": "True",
    }
    assert ini["DEFAULT"]["host"]  # nova sets none: this machine's name
    conf.load(["--config-file", str(host.conf)], prog="hypervisor-notifier")
    # The consumer is off by default: nova-compute is left alone.
    assert "hypervisor_notifier" not in read_ini(host.nova_cpu_conf)
    assert [call[0] for call in host.calls("run_process")] == ["hypervisor-notifier"]
    assert host.calls("stop_process") == []
    assert [call[3] for call in host.calls("rabbitmq-users")] == ["notifier"]


def test_compute_node_without_the_broker_uses_the_same_users_on_every_broker(devstack):
    host = devstack(ENABLED_SERVICES="n-cpu", HYPERVISOR_NOTIFIER_NOVA_CONSUMER="True")
    cell_url = f"rabbit://stackrabbit:{RABBIT_PASSWORD}@r1:5672,stackrabbit:x@r2:5672/nova_cell1"
    nova_default = {**LIBVIRT_NOVA["DEFAULT"], "transport_url": cell_url}
    host.write_nova_conf(**{**LIBVIRT_NOVA, "DEFAULT": nova_default})

    host.run("stack:install", "stack:post-config")

    assert host.calls("rabbitmq-users") == [], "users are made where the broker runs"
    pw = RABBIT_PASSWORD
    assert read_ini(host.conf)["publisher"]["transport_url"] == (
        f"rabbit://hypervisor-notifier:{pw}@r1:5672,hypervisor-notifier:{pw}@r2:5672/nova_cell1"
    )
    assert read_ini(host.nova_conf)["hypervisor_notifier"]["transport_url"] == (
        f"rabbit://nova-hypervisor-events:{pw}@r1:5672,nova-hypervisor-events:{pw}@r2:5672/nova_cell1"
    )


def test_without_rabbit_users_nova_credentials_are_used(devstack):
    host = devstack(
        HYPERVISOR_NOTIFIER_RABBIT_USERS="False", HYPERVISOR_NOTIFIER_NOVA_CONSUMER="True"
    )
    host.write_nova_conf(**LIBVIRT_NOVA)

    host.run("stack:install", "stack:post-config")

    assert host.calls("rabbitmq-users") == []
    assert read_ini(host.conf)["publisher"]["transport_url"] == NOVA_URL
    assert read_ini(host.nova_conf)["hypervisor_notifier"]["transport_url"] == NOVA_URL


def test_a_key_of_ones_own_or_no_signing(devstack):
    host = devstack(
        HYPERVISOR_NOTIFIER_NOVA_CONSUMER="True", HYPERVISOR_NOTIFIER_SIGNING_KEY="k" * 40
    )
    host.write_nova_conf(**LIBVIRT_NOVA)
    host.run("stack:install", "stack:post-config")
    assert read_ini(host.conf)["signing"]["key"] == "k" * 40
    assert read_ini(host.nova_conf)["hypervisor_notifier"]["key"] == "k" * 40

    # The next stack.sh, signing off (devstack writes nova.conf anew each time).
    host.env["HYPERVISOR_NOTIFIER_SIGN_EVENTS"] = "False"
    host.write_nova_conf(**LIBVIRT_NOVA)
    host.run("stack:post-config")
    assert not read_ini(host.conf).has_section("signing")
    assert "key" not in read_ini(host.nova_conf)["hypervisor_notifier"]


@pytest.mark.parametrize(
    ("nova", "env", "message"),
    [
        ({"DEFAULT": {"compute_driver": "fake.FakeDriver", "transport_url": NOVA_URL}}, {},
         "no backend for nova's compute_driver 'fake.FakeDriver'"),
        ({"DEFAULT": {"compute_driver": "libvirt.LibvirtDriver"}}, {},
         "has no [DEFAULT] transport_url"),
        (LIBVIRT_NOVA, {"HYPERVISOR_NOTIFIER_RABBIT_USERS_SCRIPT": "/nonexistent/users.sh"},
         "/nonexistent/users.sh not found; set HYPERVISOR_NOTIFIER_RABBIT_USERS=False"),
    ],
)  # fmt: skip
def test_what_the_plugin_cannot_configure_stops_stack_sh(devstack, nova, env, message):
    host = devstack(**env)
    host.write_nova_conf(**nova)

    result = host.run("stack:install", "stack:post-config", check=False)

    assert result.returncode != 0
    assert message in result.stderr
    assert not host.conf.exists()


def test_a_password_of_any_characters_reaches_the_configs_percent_encoded(devstack):
    password = "p/a,s#s@w:o%rd?é"
    host = devstack(HYPERVISOR_NOTIFIER_NOVA_CONSUMER="True",
                    HYPERVISOR_NOTIFIER_RABBIT_PASSWORD=password)  # fmt: skip
    nova_url = f"rabbit://stackrabbit:{RABBIT_PASSWORD}@10.0.0.5:5672,stackrabbit:x@[fd00::6]/nova%2Fcell1"
    host.write_nova_conf(**{**LIBVIRT_NOVA, "DEFAULT": {**LIBVIRT_NOVA["DEFAULT"],
                                                         "transport_url": nova_url}})  # fmt: skip

    host.run("stack:install", "stack:post-config")

    for path, section, user in (
        (host.conf, "publisher", "hypervisor-notifier"),
        (host.nova_conf, "hypervisor_notifier", "nova-hypervisor-events"),
    ):
        url = TransportURL.parse(read_ini(path)[section]["transport_url"])
        assert [(h.address, h.username, h.password) for h in url.hosts] == [
            ("10.0.0.5:5672", user, password),
            ("[fd00::6]:5672", user, password),
        ]
        assert url.virtual_host == "nova/cell1"
    # The users are made in the decoded vhost.
    assert [call[-1] for call in host.calls("rabbitmq-users")] == ["nova/cell1", "nova/cell1"]
    assert password not in (host.run("unstack").stdout)


def test_a_nova_url_the_parser_refuses_stops_stack_sh_without_its_secret(devstack):
    host = devstack()
    bad_url = "rabbit://stackrabbit:se/cret@10.0.0.5:5672/"
    host.write_nova_conf(**{**LIBVIRT_NOVA, "DEFAULT": {**LIBVIRT_NOVA["DEFAULT"],
                                                         "transport_url": bad_url}})  # fmt: skip

    result = host.run("stack:install", "stack:post-config", check=False)

    assert result.returncode != 0
    assert "transport URL: an '@' after the broker hosts" in result.stderr
    assert "[DEFAULT] transport_url cannot be used" in result.stderr
    assert "cret" not in result.stderr and "stackrabbit" not in result.stderr
    assert not host.conf.exists()
