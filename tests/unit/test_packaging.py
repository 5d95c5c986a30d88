"""What a distribution packager gets: text only, a license, full metadata.

The sdist and the wheel are built the way a distribution builds them, without
build isolation (``python -m build --no-isolation``: the sdist, then the wheel
from the unpacked sdist), from a copy of the files git would commit, so that
the working tree is left alone and a file about to be committed is checked too.
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The files that make the package: the rules and dashboard are data files.
EXPECTED_IN_WHEEL = (
    "hypervisor_notifier/notifier/health.py",
    "etc/hypervisor-notifier/prometheus-rules.yaml",
    "etc/hypervisor-notifier/grafana-dashboard.json",
    "etc/hypervisor-notifier/hypervisor-notifier.service",
)


def is_binary(data: bytes) -> bool:
    """True for what is not UTF-8 text (an empty file is text)."""
    if b"\0" in data:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def repository_files() -> list[str]:
    """Tracked files and untracked ones git does not ignore, as they are in the working tree."""
    if not (ROOT / ".git").exists():
        pytest.fail(f"{ROOT} is not a git checkout: pbr builds from git")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    return sorted({name for name in listed.split("\0") if name and (ROOT / name).is_file()})


def test_is_binary():
    assert not is_binary(b"")
    assert not is_binary("plain text, \u00e9t\u00e9\n".encode())
    assert is_binary(b"PK\x03\x04\x14\x00\x00\x00")  # a zip, a wheel
    assert is_binary(b"\x89PNG\r\n\x1a\n")
    assert is_binary(b"\xff\xfe\xfa\xf3 no NUL but not UTF-8")


def test_no_binary_file_in_the_repository():
    binaries = [name for name in repository_files() if is_binary((ROOT / name).read_bytes())]
    assert binaries == [], "binary files in the repository"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel) built from a one-commit copy of the repository."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    for name in repository_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        subprocess.run([*git, *command], cwd=source, check=True)
    dist = tmp / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    return sdist, wheel


def sdist_members(path: Path) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            if member.isfile():
                handle = archive.extractfile(member)
                assert handle is not None
                # Without the top directory (name-version/).
                yield member.name.partition("/")[2], handle.read()


def wheel_members(path: Path) -> Iterator[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.endswith("/"):
                yield name, archive.read(name)


def test_no_binary_file_in_the_sdist_or_the_wheel(built):
    sdist, wheel = built
    for path, members in ((sdist, sdist_members(sdist)), (wheel, wheel_members(wheel))):
        contents = dict(members)
        binaries = [name for name, data in contents.items() if is_binary(data)]
        assert binaries == [], f"binary files in {path.name}"
        print(f"\n{path.name}: {len(contents)} files, {path.stat().st_size} bytes, all text")


def test_the_sdist_and_the_wheel_carry_the_license_and_the_metadata(built):
    sdist, wheel = built
    in_sdist = dict(sdist_members(sdist))
    in_wheel = dict(wheel_members(wheel))
    license_text = (ROOT / "LICENSE").read_bytes()
    assert b"Apache License" in license_text and b"Version 2.0, January 2004" in license_text
    assert in_sdist["LICENSE"] == license_text
    assert license_text in [data for name, data in in_wheel.items() if name.endswith("LICENSE")]
    for wanted in EXPECTED_IN_WHEEL:
        assert any(name.endswith(wanted) for name in in_wheel), wanted
    assert not any(name.endswith(".whl") for name in in_sdist)

    (metadata_name,) = [name for name in in_wheel if name.endswith(".dist-info/METADATA")]
    metadata = email.message_from_bytes(in_wheel[metadata_name])
    assert metadata["Name"] == "hypervisor-notifier"
    assert metadata["Summary"]
    assert metadata["License"] == "Apache-2.0" or metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Requires-Python"] == ">=3.10"
    urls = dict(value.split(", ", 1) for value in metadata.get_all("Project-URL"))
    assert {"Documentation", "Source", "Bug Tracker"} <= set(urls)
    assert metadata["Home-page"] or "Homepage" in urls
    assert "License :: OSI Approved :: Apache Software License" in metadata.get_all("Classifier")
