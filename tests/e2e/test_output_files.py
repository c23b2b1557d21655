"""Output paths never replace a file vault did not write: backups, checkpoint exports, reports,
the Prometheus file and what `maintain` writes. A file vault wrote there before (its own header)
is replaced; anything else needs --force; a link, a directory or a device never is written."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.conftest import Harness, add_client

PRECIOUS = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n"

# Every command that writes a file it is given, as (name, args with FILE).
WRITERS = {
    "backup": ("backup", "FILE"),
    "checkpoint": ("audit", "checkpoint", "--export", "FILE"),
    "prometheus": ("expiry", "--format", "prometheus", "-o", "FILE"),
    "audit report": ("report", "audit", "--format", "json", "-o", "FILE"),
    "revocations report": ("report", "revocations", "--format", "csv", "-o", "FILE"),
    "expiry report": ("report", "expiry", "-o", "FILE"),
}
# the ones that recognise their own earlier file by its header and replace it unasked
OWN_HEADER = {"backup", "checkpoint", "prometheus"}


def _args(writer: str, file: Path, *extra: str) -> list[str]:
    return [str(file) if a == "FILE" else a for a in WRITERS[writer]] + list(extra)


def _refused(result, words: str) -> None:
    assert result.code == 2, result.text
    last = result.err.strip().splitlines()[-1]  # a usage error shows the usage first
    assert last.startswith("vault: error: ") and words in last, result.err
    assert "Traceback" not in result.text


@pytest.fixture
def jira(vault: Harness) -> Harness:
    add_client(vault, "jira")
    return vault


def test_an_existing_file_vault_did_not_write_needs_force(jira: Harness, tmp_path: Path) -> None:
    for writer in WRITERS:
        target = tmp_path / f"{writer.replace(' ', '-')}.out"
        target.write_text(PRECIOUS)
        _refused(jira.run(*_args(writer, target)), "already exists")
        assert target.read_text() == PRECIOUS, writer
        jira.ok(*_args(writer, target, "--force"))
        assert target.read_text(errors="replace") != PRECIOUS, writer
    assert not list(tmp_path.glob(".vault-*"))  # no temporary file left behind


def test_a_file_vault_wrote_there_before_is_replaced(jira: Harness, tmp_path: Path) -> None:
    for writer in WRITERS:
        target = tmp_path / f"{writer.replace(' ', '-')}.out"
        jira.ok(*_args(writer, target))
        first = target.read_bytes()
        again = jira.run(*_args(writer, target))
        if writer in OWN_HEADER:
            assert again.code == 0, (writer, again.text)
        else:  # a report carries no header of vault's: replacing one is said with --force
            _refused(again, "already exists")
            assert target.read_bytes() == first
            jira.ok(*_args(writer, target, "--force"))
    prom = tmp_path / "prometheus.out"
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644  # node_exporter reads it
    assert prom.read_text().startswith("# vault-metrics-v1")


def test_links_directories_and_devices_are_never_written(jira: Harness, tmp_path: Path) -> None:
    precious = tmp_path / "passwd"
    precious.write_text(PRECIOUS)
    (tmp_path / "link").symlink_to(precious)
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing-yet")
    (tmp_path / "directory").mkdir()
    os.mkfifo(tmp_path / "fifo")
    os.mknod(tmp_path / "device", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
    cases = {"link": "symbolic link", "dangling": "symbolic link", "directory": "is a directory",
             "fifo": "device, pipe or socket", "device": "device, pipe or socket"}
    for writer in WRITERS:
        for name, words in cases.items():
            for force in ((), ("--force",)):
                _refused(jira.run(*_args(writer, tmp_path / name, *force)), words)
    assert precious.read_text() == PRECIOUS
    assert not (tmp_path / "nothing-yet").exists()
    assert stat.S_ISCHR(os.lstat(tmp_path / "device").st_mode)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
    assert os.listdir(tmp_path / "directory") == []


def test_a_relative_path_that_climbs_to_the_user_database_is_refused(
        jira: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`audit checkpoint --export ../../../etc/passwd` run as root from three levels down once
    replaced the system's user database (here: a copy of that tree in a temporary directory)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PRECIOUS)
    (root / "home" / "ops" / "work").mkdir(parents=True)
    monkeypatch.chdir(root / "home" / "ops" / "work")
    for writer in WRITERS:
        _refused(jira.run(*_args(writer, Path("../../../etc/passwd"))), "already exists")
    assert (root / "etc" / "passwd").read_text() == PRECIOUS
    assert sorted(os.listdir(root / "etc")) == ["passwd"]


def test_maintain_replaces_only_its_own_metrics_and_checkpoint_files(
        jira: Harness, tmp_path: Path) -> None:
    metrics, checkpoints = tmp_path / "vault.prom", tmp_path / "checkpoints"
    checkpoints.mkdir()
    run = ("maintain", "--probe-every", "0", "--metrics-file", str(metrics),
           "--checkpoint-dir", str(checkpoints))
    metrics.write_text(PRECIOUS)
    _refused(jira.run(*run), "not a metrics file vault wrote")
    assert metrics.read_text() == PRECIOUS and os.listdir(checkpoints) == []

    # a metrics file vault wrote before the marker line existed is vault's too
    metrics.write_text("# HELP vault_secret_expiry_timestamp_seconds End of a client secret\n")
    jira.ok(*run)
    assert metrics.read_text().startswith("# vault-metrics-v1")
    assert stat.S_IMODE(metrics.stat().st_mode) == 0o644
    jira.ok(*run)  # and its own file, next run
    (checkpoint,) = checkpoints.iterdir()

    checkpoint.write_text(PRECIOUS)
    _refused(jira.run(*run), "not a checkpoint vault wrote")
    assert checkpoint.read_text() == PRECIOUS
    checkpoint.unlink()
    checkpoint.symlink_to(tmp_path / "elsewhere")
    _refused(jira.run(*run, "--force"), "symbolic link")
    assert not (tmp_path / "elsewhere").exists()
    checkpoint.unlink()
    checkpoint.write_text(PRECIOUS)
    steps = json.loads(jira.ok(*run, "--force", "--json").out)
    assert {s["step"]: s["outcome"] for s in steps}["checkpoint"] == "ok"
    assert checkpoint.read_text().startswith("vault-audit-checkpoint-v1\n")
