"""The example units and cron line in docs/systemd are what admins copy: systemd must accept
them as they are, their hardening must hold, and the cron line must find and bound vault."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import debian_tool
from tests.support import ROOT

DOCS = ROOT / "docs" / "systemd"


def _units(tmp_path: Path) -> tuple[Path, Path]:
    """The units as shipped, with ExecStart pointed at this checkout's vault."""
    vault = Path(sys.executable).with_name("vault")
    service = tmp_path / "vault-maintain.service"
    service.write_text((DOCS / service.name).read_text().replace("/usr/local/bin/vault",
                                                                 str(vault)))
    timer = shutil.copy(DOCS / "vault-maintain.timer", tmp_path)
    return service, Path(timer)


def test_systemd_accepts_the_units_and_their_hardening_holds(tmp_path: Path) -> None:
    analyze = debian_tool("systemd-analyze", "systemd", "checking the example units")
    service, timer = _units(tmp_path)
    verify = subprocess.run([analyze, "verify", "--man=no", str(service), str(timer)],
                            capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    security = subprocess.run([analyze, "security", "--offline=true", "--threshold=20",
                               str(service)], capture_output=True, text=True)
    assert security.returncode == 0, security.stdout + security.stderr
    (verdict,) = [line for line in security.stdout.splitlines() if "exposure level" in line]
    assert float(verdict.split(":")[1].split()[0]) <= 2.0, verdict  # "OK" starts below 2.0
    text = service.read_text()
    for setting in ("LoadCredential=vault.key:", "--webhook-file %d/webhook.url", "UMask=0077",
                    "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert setting in text, setting
    assert "Persistent=true" in timer.read_text() and "OnCalendar=" in timer.read_text()


def test_the_cron_line_finds_vault_and_bounds_each_run() -> None:
    lines = [line for line in (DOCS / "vault.cron").read_text().splitlines()
             if line and not line.startswith("#")]
    env = dict(line.split("=", 1) for line in lines if "=" in line.split()[0])
    assert "/usr/local/bin" in env["PATH"].split(":")  # cron's own PATH is /usr/bin:/bin
    (job,) = [line for line in lines if line[0] in "*0123456789"]
    fields = shlex.split(job)
    schedule, user, command = fields[:5], fields[5], fields[6:]
    assert schedule[0] == "*/30" and user == "vault"
    assert command[:3] == ["flock", "-n", "/var/lib/vault/.maintain.lock"]
    assert command[3:6] == ["timeout", "25m", "vault"] and command[6] == "maintain"
    assert "2>" not in job  # failures go to stderr, which cron mails


def test_systemd_accepts_the_agent_units(tmp_path: Path) -> None:
    """The system unit (hardened like vault-maintain.service) and the user unit: Type=notify,
    the agent in the foreground, where the docs say they are."""
    analyze = debian_tool("systemd-analyze", "systemd", "checking the example units")
    vault = Path(sys.executable).with_name("vault")
    system = tmp_path / "vault-agent.service"
    system.write_text((DOCS / system.name).read_text().replace("/usr/local/bin/vault",
                                                               str(vault)))
    user = tmp_path / "user" / "vault-agent.service"
    user.parent.mkdir()
    user.write_text((DOCS / "vault-agent.user.service").read_text().replace(
        "%h/.local/bin/vault", str(vault)))
    for unit in (system, user):
        verify = subprocess.run([analyze, "verify", "--man=no", str(unit)],
                                capture_output=True, text=True)
        assert verify.returncode == 0 and verify.stderr == "", (unit, verify.stderr)
        text = unit.read_text()
        assert "Type=notify" in text and "agent start --foreground" in text
    security = subprocess.run([analyze, "security", "--offline=true", "--threshold=20",
                               str(system)], capture_output=True, text=True)
    (verdict,) = [line for line in security.stdout.splitlines() if "exposure level" in line]
    assert float(verdict.split(":")[1].split()[0]) <= 2.0, verdict
    assert "--locked" in user.read_text() and "--lock-after" in user.read_text()
