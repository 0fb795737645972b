"""Dovecot's imaptest against recall-lab's IMAP server: every compliance group our capabilities allow, and a
short multi-client stress run, on the memory store and on the Maildir store.

Why both modes: the compliance scripts check exact answers to fixed commands (atoms, SEARCH, SORT, FETCH ...);
the stress mode runs 10 random sessions against one mailbox and checks every response against its model of
the mailbox, which finds ordering bugs no fixed script does (a keyword shown before `* FLAGS` announced it).

How the compliance groups are chosen: a script's header (`capabilities: X Y`, `user 2: $user2`) says what it
needs; imaptest passes over a script whose needs the server lacks without counting it (its summary always
says 0 skipped), so the groups are chosen here from the server's capability table (checked against the live
post-login CAPABILITY) and those not run are listed, with the reason, by test_compliance_summary. The groups that can run are copied into one directory and run in one
imaptest invocation per store (about a second); each group is then one test item that fails with imaptest's
own explanation. Dovecot 2.3.19 passes every group (4 skipped: urlauth x3, sort-partial).
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from recall_lab.fake_servers.imap.capabilities import capabilities

from .imaptest_mbox import write_mbox
from .servers import ThreadedRecallLabServer

IMAPTEST = shutil.which("imaptest") or "/usr/local/bin/imaptest"
SCRIPTS = Path(os.environ.get("IMAPTEST_SCRIPTS", "/usr/local/share/imaptest/tests"))
STORES = ("memory", "maildir")
USER, PASSWORD = "imaptest@corp.example", "imaptest-password"
STRESS_CLIENTS, STRESS_SECS, STRESS_SEED, STRESS_MESSAGES = 10, 6, 1, 100

_FAILED_GROUP = re.compile(r"^\*\*\* Test (\S+) ", re.M)
_SUMMARY = re.compile(r"^(\d+) test groups: (\d+) failed", re.M)
_COMMANDS = re.compile(r"^(base protocol|extensions): (\d+)/(\d+) individual commands failed", re.M)


def _installed() -> str | None:
    """Why imaptest cannot run here, or None when it can."""
    if not os.access(IMAPTEST, os.X_OK):
        return f"imaptest not installed ({IMAPTEST}; ../shared/tools/imaptest/build.sh builds it)"
    if not SCRIPTS.is_dir():
        return f"imaptest's compliance scripts not found in {SCRIPTS}"
    return None


def _groups() -> list[str]:
    """The compliance scripts (one test group each): every file but the .mbox inputs."""
    if not SCRIPTS.is_dir():
        return []
    return sorted(p.name for p in SCRIPTS.iterdir() if p.is_file() and not p.name.endswith(".mbox"))


def script_header(path: Path) -> dict[str, str]:
    """The `key: value` lines before a script's first empty line ('#' lines are comments), keys lower-cased."""
    header: dict[str, str] = {}
    with path.open("rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                break
            if line.startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            header[key.strip().lower()] = value.strip()
    return header


def skip_reason(header: dict[str, str], capabilities: set[str]) -> str | None:
    """Why imaptest would pass over a script with this header on a server with these capabilities."""
    missing = [c for c in header.get("capabilities", "").split() if c.upper() not in capabilities]
    if missing:
        return f"needs {' '.join(missing)}, which the server does not announce"
    if any(k.startswith("user ") and v in ("$user2", "${user2}") for k, v in header.items()):
        return "needs a second user (imaptest user2=...), not configured"
    return None


@dataclass
class Run:
    """One store's imaptest compliance run."""

    store: str
    capabilities: set[str]
    skipped: dict[str, str] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    output: str = ""

    def failure_of(self, group: str) -> str | None:
        """imaptest's explanation of `group`'s failures, or None when it passed."""
        blocks = [b for b in re.split(r"(?m)^(?=\*\*\* Test )", self.output) if b.startswith(f"*** Test {group} ")]
        return "\n".join(blocks) if blocks else None


def _capabilities(port: int) -> set[str]:
    """What imaptest sees: the CAPABILITY answer after login."""
    with imaplib.IMAP4("127.0.0.1", port, timeout=10) as client:
        client.login(USER, PASSWORD)
        _, data = client.capability()
        client.logout()
    return {c.upper() for c in data[0].decode().split()}


def _imaptest(port: int, *args: str, timeout: float) -> str:
    proc = subprocess.run([IMAPTEST, "host=127.0.0.1", f"port={port}", f"user={USER}", f"pass={PASSWORD}", *args],
                          capture_output=True, text=True, errors="replace", timeout=timeout, check=False)
    return proc.stdout + proc.stderr


@dataclass(frozen=True)
class Target:
    """recall-lab's server over one kind of store."""

    store: str
    port: int


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    reason = _installed()
    if reason:
        pytest.skip(reason)
    maildir = tmp_path_factory.mktemp("maildir") if request.param == "maildir" else None
    srv = ThreadedRecallLabServer({USER: PASSWORD}, maildir).start()
    try:
        yield Target(request.param, srv.port)
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def compliance(server: Target, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Run every group the server's capabilities allow, in one imaptest invocation."""
    run = Run(server.store, _capabilities(server.port))
    chosen = tmp_path_factory.mktemp("imaptest-scripts")
    for mbox in SCRIPTS.glob("*.mbox"):
        shutil.copy(mbox, chosen / mbox.name)
    for group in _groups():
        reason = skip_reason(script_header(SCRIPTS / group), run.capabilities)
        if reason:
            run.skipped[group] = reason
        else:
            run.ran.append(group)
            shutil.copy(SCRIPTS / group, chosen / group)
    run.output = _imaptest(server.port, f"test={chosen}", timeout=180)
    return run


@pytest.mark.peer("imaptest")
def test_compliance_summary(compliance: Run) -> None:
    """imaptest ran exactly the groups chosen, and none failed (Dovecot 2.3.19: 0 failed)."""
    summary = _SUMMARY.search(compliance.output)
    assert summary is not None, compliance.output[-3000:]
    total, failed = int(summary.group(1)), int(summary.group(2))
    commands = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in _COMMANDS.finditer(compliance.output)}
    print(f"\nimaptest on the {compliance.store} store: {total} groups run, {failed} failed, "
          f"{len(compliance.skipped)} skipped; commands failed: {commands}")
    for group, reason in sorted(compliance.skipped.items()):
        print(f"  skipped {group}: {reason}")
    assert total == len(compliance.ran), "imaptest passed over a group we expected it to run"
    assert commands.get("base protocol", (0, 0))[1] > 0, compliance.output[-3000:]
    assert failed == 0, "\n".join(sorted(set(_FAILED_GROUP.findall(compliance.output))))


def _announced() -> set[str]:
    """What the server announces after login, from the table it answers CAPABILITY with."""
    return {c.upper() for c in capabilities(authenticated=True, tls_available=False, tls_active=False,
                                            login_disabled_without_tls=False)}


def _runnable_groups() -> list[str]:
    """The groups imaptest runs against this server (known when tests are collected, so a group the server
    cannot take is not a skipped test but a line of test_compliance_summary's report)."""
    return [g for g in _groups() if skip_reason(script_header(SCRIPTS / g), _announced()) is None]


@pytest.mark.peer("imaptest")
def test_the_groups_chosen_match_what_the_server_announces(compliance: Run) -> None:
    """The groups were chosen from the capability table; the live server must announce exactly that."""
    assert compliance.capabilities == _announced()
    assert sorted(compliance.ran) == _runnable_groups()


@pytest.mark.peer("imaptest")
@pytest.mark.parametrize("group", _runnable_groups() or ["(no scripts)"])
def test_compliance_group(compliance: Run, group: str) -> None:
    assert group in compliance.ran, compliance.skipped.get(group, "imaptest's scripts are missing")
    failure = compliance.failure_of(group)
    assert failure is None, failure


@pytest.mark.peer("imaptest")
def test_stress_finds_no_errors(server: Target, tmp_path: Path) -> None:
    """10 random clients on INBOX for a few seconds: imaptest checks every response against its model
    (Dovecot: no `Error:` line). The messages come from a seeded mbox, so each run appends the same ones."""
    mbox = write_mbox(tmp_path / "stress.mbox", STRESS_MESSAGES, seed=STRESS_SEED)
    output = _imaptest(server.port, f"mbox={mbox}", f"clients={STRESS_CLIENTS}", f"secs={STRESS_SECS}",
                       f"seed={STRESS_SEED}", timeout=STRESS_SECS + 60)
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert "Totals:" in output, output[-3000:]
    totals = [line for line in output.split("Totals:", 1)[1].splitlines() if line.strip()]
    counts = [int(n) for n in re.findall(r"\d+", totals[-1])] if totals else []
    print(f"\nimaptest stress on the {server.store} store: {len(errors)} errors; "
          f"commands {totals[0].split() if totals else []} -> {counts}")
    assert counts and min(counts) > 0, output[-3000:]  # the run did something of every kind
    assert not errors, "\n".join(errors[:20])


def test_script_headers_decide_the_skips(tmp_path: Path) -> None:
    script = tmp_path / "g"
    script.write_text("# comment\ncapabilities: SORT x-thing\nuser 2: $user2\nmessages: all\n\nok noop\n")
    header = script_header(script)
    assert header == {"capabilities": "SORT x-thing", "user 2": "$user2", "messages": "all"}
    assert skip_reason(header, {"SORT"}) == "needs x-thing, which the server does not announce"
    assert skip_reason(header, {"SORT", "X-THING"}) == "needs a second user (imaptest user2=...), not configured"
    assert skip_reason({"state": "auth"}, set()) is None
