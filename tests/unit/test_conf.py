"""Configuration: bad values stop the start with the option's name; help and sample complete."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from oslo_config import cfg

import hypervisor_notifier
from hypervisor_notifier import conf
from hypervisor_notifier.conf import sources

REPO = Path(__file__).resolve().parents[2]
GENERATOR_CONF = REPO / "etc/hypervisor-notifier/hypervisor-notifier-config-generator.conf"
SAMPLE = REPO / "etc/hypervisor-notifier/hypervisor-notifier.conf.sample"


@pytest.fixture
def load_config(tmp_path):
    """Load a config file of the given text, and no other file (an empty --config-dir)."""
    (tmp_path / "conf.d").mkdir()

    def load(text: str):
        path = tmp_path / "hypervisor-notifier.conf"
        path.write_text(text)
        argv = ["--config-file", str(path), "--config-dir", str(tmp_path / "conf.d")]
        return conf.load(argv, prog="hypervisor-notifier")

    return load


def test_load_reads_the_contract_options(load_config):
    loaded = load_config(
        "[DEFAULT]\nhost = compute1.example.org\nbackend = libvirt\n"
        "[libvirt]\nconnection_uri = test+unix:///default\n"
        "[publisher]\ntransport_url = rabbit://nova:s3cret@b1,nova:s3cret@b2/\n"
        "exchange = hv\ntopic = hv_events\nconfirm_window = 7\n"
    )

    assert loaded.host == "compute1.example.org"
    assert loaded.backend == "libvirt"
    assert loaded.libvirt.connection_uri == "test+unix:///default"
    assert loaded.publisher.transport_url == "rabbit://nova:s3cret@b1,nova:s3cret@b2/"
    assert (loaded.publisher.exchange, loaded.publisher.topic) == ("hv", "hv_events")
    assert loaded.publisher.confirm_window == 7


def test_defaults_follow_the_design(load_config):
    loaded = load_config("")

    assert loaded.host == socket.gethostname()
    assert loaded.publisher.exchange == "hypervisor"
    assert loaded.publisher.topic == "hypervisor_events"


@pytest.mark.parametrize(
    ("section", "line", "option"),
    [
        ("publisher", "confirm_window = many", "confirm_window"),  # wrong type
        ("publisher", "confirm_window = 0", "confirm_window"),  # out of range
        ("libvirt", "keepalive_interval = -1", "keepalive_interval"),
        ("DEFAULT", "shutdown_timeout = soon", "shutdown_timeout"),
        ("DEFAULT", "use_stderr = maybe", "use_stderr"),  # oslo.log's
        ("publisher", "queue_type = fifo", "queue_type"),  # not a choice
        ("DEFAULT", "host = a b", "host"),  # would break the routing key
        ("DEFAULT", "host = compute*", "host"),
        ("publisher", "topic = hypervisor#events", "topic"),
    ],
)
def test_a_bad_value_raises_config_error_naming_the_option(load_config, section, line, option):
    with pytest.raises(conf.ConfigError, match=rf"\b{option}\b"):
        load_config(f"[{section}]\n{line}\n")


def test_every_group_of_the_service_is_listed():
    groups = {group or "DEFAULT" for group, _ in conf.list_opts()}

    assert {"DEFAULT", "libvirt", "publisher"} <= groups


def test_every_option_has_help():
    missing = [
        f"[{group or 'DEFAULT'}] {opt.name}"
        for group, opts in conf.list_opts()
        for opt in opts
        if not (opt.help or "").strip()
    ]

    assert missing == []


def test_the_transport_url_is_secret():
    # oslo.config then masks it when it logs the configuration.
    (publisher_opts,) = [opts for group, opts in conf.list_opts() if group == "publisher"]

    assert {opt.name: opt.secret for opt in publisher_opts}["transport_url"] is True


def test_the_committed_sample_config_is_up_to_date(tmp_path):
    generated = tmp_path / "sample.conf"

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "oslo_config.generator",
            "--config-file",
            str(GENERATOR_CONF),
            "--output-file",
            str(generated),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr

    assert generated.read_text() == SAMPLE.read_text(), "run: tox -e genconfig"


def test_conf_repeats_the_contracts_values_exactly():
    # conf is a leaf, so it spells these values out; they must not drift apart.
    from hypervisor_notifier import signing, wire
    from hypervisor_notifier.conf import outbox as outbox_conf
    from hypervisor_notifier.conf import publisher as publisher_conf
    from hypervisor_notifier.conf import signing as signing_conf
    from hypervisor_notifier.notifier import outbox

    assert publisher_conf.QUEUE_TYPES == wire.QUEUE_TYPES
    assert outbox_conf.MAX_EVENTS == outbox.MAX_EVENTS
    assert signing_conf.MIN_KEY_BYTES == signing.MIN_KEY_BYTES
    assert signing_conf.DEFAULT_MAX_AGE == signing.DEFAULT_MAX_AGE
    assert signing_conf.DEFAULT_MAX_CLOCK_SKEW == signing.DEFAULT_MAX_CLOCK_SKEW


# -- typos and errors: one line each, naming file, section and option -----------------


def problems_of(load_config, text: str) -> list[str]:
    with pytest.raises(conf.ConfigError) as raised:
        load_config(text)
    assert str(raised.value) == "\n".join(raised.value.problems)
    return raised.value.problems


def test_unknown_options_and_sections_are_each_reported_with_file_and_section(
    load_config, tmp_path
):
    path = tmp_path / "hypervisor-notifier.conf"

    problems = problems_of(
        load_config,
        "[DEFAULT]\nbackend = libvirt\nhostname = h1\n"
        "[publsher]\ntransport_url = rabbit://nova:s3cret@broker/\n"
        "[publisher]\ntransprot_url = rabbit://nova:s3cret@broker/\nexchange = hv\n",
    )

    assert problems == [
        f"{path}: [DEFAULT] hostname: unknown option (did you mean host?)",
        f"{path}: [publsher]: unknown section (did you mean publisher?)",
        f"{path}: [publisher] transprot_url: unknown option (did you mean transport_url?)",
    ]


def test_a_config_dir_is_checked_too_and_section_names_are_case_insensitive(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "50-extra.conf").write_text("[Publisher]\ntopic = t\n[sink]\nx = 1\n")

    with pytest.raises(conf.ConfigError) as raised:
        conf.load(["--config-dir", str(tmp_path / "conf.d")], prog="hypervisor-notifier")

    assert raised.value.problems == [f"{tmp_path}/conf.d/50-extra.conf: [sink]: unknown section"]


def test_what_a_library_registers_on_the_conf_is_known_without_a_list(tmp_path):
    # A library (as oslo.log does) registers its options on the same ConfigOpts:
    # they are known from then on.
    path = tmp_path / "n.conf"
    path.write_text("[DEFAULT]\nlibrary_dir = /var/x\n[library_group]\nflag = true\n")
    loaded = cfg.ConfigOpts()
    conf.register_opts(loaded)
    loaded(["--config-file", str(path)])
    assert len(sources.unknown(loaded, [str(path)])) == 2

    loaded.register_opt(cfg.StrOpt("library_dir"))
    loaded.register_opt(cfg.BoolOpt("flag", deprecated_name="old_flag"), group="library_group")
    path.write_text(path.read_text() + "old_flag = true\n")
    assert sources.unknown(loaded, [str(path)]) == []


def test_a_bad_value_is_one_line_with_file_section_and_option_without_location_info(
    load_config, tmp_path
):
    problems = problems_of(
        load_config, "[publisher]\nconfirm_window = many\nqueue_type = fifo\n[sink]\n"
    )

    path = tmp_path / "hypervisor-notifier.conf"
    assert problems == [
        f"{path}: [sink]: unknown section",
        f"{path}: [publisher] queue_type: Valid values are [classic, quorum], but found 'fifo'",
        f"{path}: [publisher] confirm_window: invalid literal for int() with base 10: 'many'",
    ]


def test_a_parse_error_names_the_file_and_line_but_not_the_line(load_config, tmp_path):
    path = tmp_path / "hypervisor-notifier.conf"
    assert problems_of(load_config, "[signing]\nkey s3cret\n") == [
        f"{path}: line 2: No ':' or '=' found in assignment"
    ]
    # A ":" makes it an assignment to an option with a space in its name.
    assert problems_of(load_config, "[signing]\nkey s3cret:more\n") == [
        f"{path}: [signing] key ...: not an option name (a missing '='?)"
    ]


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(conf.ConfigError, match=f"^{tmp_path}/nope.conf: no such config file$"):
        conf.load(["--config-file", str(tmp_path / "nope.conf")], prog="hypervisor-notifier")


def test_where_names_the_file_that_sets_the_option(tmp_path):
    first, second = tmp_path / "a.conf", tmp_path / "b.conf"
    first.write_text("[publisher]\ntransport_url = rabbit://b1/\n")
    second.write_text("[publisher]\nexchange = hv\n")
    loaded = conf.load(["--config-file", str(first), "--config-file", str(second)],
                       prog="hypervisor-notifier")  # fmt: skip

    assert (
        conf.where(loaded, "publisher", "transport_url") == f"{first}: [publisher] transport_url"
    )
    assert conf.where(loaded, "publisher") == f"{second}: [publisher]"
    assert conf.where(loaded, "signing", "key") == "[signing] key"


@pytest.mark.parametrize("module", ["notifier", "status", "events"])
def test_every_command_answers_version(module):
    result = subprocess.run(
        [sys.executable, "-m", f"hypervisor_notifier.cmd.{module}", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == hypervisor_notifier.version()
