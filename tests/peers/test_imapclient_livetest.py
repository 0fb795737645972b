"""imapclient's own live test suite (`python -m imapclient.livetest CONFIG.ini`) against both servers.

The suite is run as published, in subprocesses, and its `-v` output is parsed. It has two test classes built
from one factory (with and without UIDs) whose tests print the same names, so each class is run by name in
its own process, each with its own account (the suite deletes its folder tree as it goes); all of them, for
both servers, run at once.

Allowed to fail, against recall-lab, are only the tests that fail against Dovecot too for reasons of the
suite or of imapclient 4.1.0 itself; the same test run against Dovecot proves that list: the deterministic
ones must fail there, and nothing outside the list may. Two of them only measure speed (TIMING_DEPENDENT).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from recall_lab.harness.dovecot import dovecot_binary

from .conftest import open_endpoints
from .servers import ImapEndpoint, SharedDovecot

#: (class, test) -> why it fails against any server, Dovecot included.
ALLOWED_FAILURES = {
    ("TestWithUIDs", "test_fetch"): "compares imapclient's Envelope dataclass as a sequence",
    ("TestWithoutUIDs", "test_fetch"): "compares imapclient's Envelope dataclass as a sequence",
    ("TestWithoutUIDs", "test_move"): "non-UID move goes through stdlib imaplib, which has no move",
    ("TestSocketTimeout", "test_small_read_timeout_fail"):
        "timing: expects NOOP's answer to take over its 10 µs (in effect 1 ms) read timeout; loopback is faster",
    ("TestSocketTimeout", "test_small_connection_timeout_fail"):
        "timing: expects connect + greeting to take over 1 ms; fails against a Dovecot whose login process is"
        " already running, passes only against a cold one",
}

#: The allowed failures that depend on how fast the server answers: they may pass or fail on either server.
TIMING_DEPENDENT = {("TestSocketTimeout", "test_small_read_timeout_fail"),
                    ("TestSocketTimeout", "test_small_connection_timeout_fail")}

#: Capabilities the issue requires of recall-lab's server; a test skipped for lack of one of them is a failure.
REQUIRED_CAPABILITIES = {
    "IMAP4rev1", "LITERAL+", "IDLE", "UIDPLUS", "MOVE", "NAMESPACE", "ENABLE", "SPECIAL-USE", "ID", "UNSELECT",
    "CHILDREN", "SASL-IR", "AUTH=PLAIN", "CONDSTORE", "QRESYNC",
}

#: Groups of classes, one process (and account) each, run at once: TestGeneral's test_idle alone sleeps 10 s.
GROUPS = (("TestGeneral",), ("TestSocketTimeout", "TestWithUIDs"), ("TestWithoutUIDs",))

#: A result ends a line after " ... ", or stands alone when something (a log line, a warning) was printed
#: between the test's name and its result.
_RESULT = re.compile(r"(?:^| \.\.\. )(ok|FAIL|ERROR|skipped (?P<reason>.*)|expected failure|unexpected success)$")
_START = re.compile(r"^(?P<name>\w+) \((?P<where>[^)]*)\)")


@dataclass(frozen=True)
class Outcome:
    cls: str
    test: str
    status: str  # ok, FAIL, ERROR, skipped, ...
    reason: str = ""


def parse_verbose(output: str, classes: tuple[str, ...]) -> tuple[list[Outcome], int]:
    """unittest -v output -> outcomes (and the "Ran N tests" count). A test's docstring may put its
    status on the next line; the class is read from the test id, or from the only class of a group.
    A test that fails and then errors in tearDown is printed twice (FAIL, then ERROR) but counted once by
    "Ran N": it is one outcome here too, a failure."""
    outcomes: list[Outcome] = []
    index: dict[tuple[str, str], int] = {}
    pending: tuple[str, str] | None = None
    for line in output.splitlines():
        start = _START.match(line)
        if start:
            where = start["where"]
            cls = next((c for c in classes if c in where.split(".")), classes[-1])
            pending = (cls, start["name"])
        result = _RESULT.search(line)
        if result and pending:
            status = result.group(1).split(" ")[0]
            outcome = Outcome(pending[0], pending[1], status, (result["reason"] or "").strip("'\""))
            if pending not in index:
                index[pending] = len(outcomes)
                outcomes.append(outcome)
            elif status in ("FAIL", "ERROR"):
                outcomes[index[pending]] = outcome
            pending = None
    ran = re.search(r"^Ran (\d+) tests? in", output, re.M)
    return outcomes, int(ran.group(1)) if ran else -1


def start_suite(endpoints: list[ImapEndpoint], workdir: Path) -> list[tuple[tuple[str, ...], subprocess.Popen]]:
    """Start one process per group of classes, each on its own account; they run while the caller waits."""
    workdir.mkdir(exist_ok=True)
    procs = []
    for endpoint, classes in zip(endpoints, GROUPS, strict=True):
        ini = workdir / f"livetest-{classes[-1]}.ini"
        ini.write_text(
            "[DEFAULT]\n"
            f"host = {endpoint.host}\nport = {endpoint.port}\nssl = false\n"
            f"username = {endpoint.user}\npassword = {endpoint.password}\n"
        )
        cmd = [sys.executable, "-m", "imapclient.livetest", str(ini), "-v", *classes]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # a warning mid-line would split a result from its test
        procs.append((classes, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                text=True, cwd=workdir, env=env)))
    return procs


def collect_suite(procs: list[tuple[tuple[str, ...], subprocess.Popen]], workdir: Path) -> tuple[list[Outcome], str]:
    """Wait for the processes; their outcomes, and their output (kept in workdir too) for failure messages."""
    outcomes: list[Outcome] = []
    outputs = ""
    for classes, proc in procs:
        output, _ = proc.communicate(timeout=60)
        (workdir / f"livetest-{classes[-1]}.out").write_text(output)
        outputs += output
        found, ran = parse_verbose(output, classes)
        assert ran > 0 and ran == len(found), f"could not read the suite's results:\n{output[-3000:]}"
        outcomes += found
    return outcomes, outputs


def failure_reports(output: str, wanted: set[tuple[str, str]]) -> str:
    """The unittest failure blocks (traceback included) of the tests in `wanted`."""
    blocks = re.split(r"^={70}$", output, flags=re.M)
    names = {test for _, test in wanted}
    found = []
    for block in blocks:
        head = re.match(r"\s*(FAIL|ERROR): (\w+)", block)
        if head and head.group(2) in names:
            found.append(re.split(r"\n-{70}\nRan ", block)[0].strip())
    return "\n\n".join(found)


def failures(outcomes: list[Outcome]) -> set[tuple[str, str]]:
    return {(o.cls, o.test) for o in outcomes if o.status in ("FAIL", "ERROR", "unexpected")}


def dovecot_problems(outcomes: list[Outcome], output: str) -> str | None:
    """Proves the allow-list: its deterministic entries fail against Dovecot too, and nothing else does."""
    failed = failures(outcomes)
    wrong = (failed - set(ALLOWED_FAILURES)) | (set(ALLOWED_FAILURES) - TIMING_DEPENDENT - failed)
    return f"{sorted(wrong)}\n{failure_reports(output, wrong)}" if wrong else None


def recall_lab_problems(outcomes: list[Outcome], output: str) -> str | None:
    """Only allow-listed failures, and no test skipped for lack of a capability the issue requires."""
    unexpected = failures(outcomes) - set(ALLOWED_FAILURES)
    problems = [f"{sorted(unexpected)}\n{failure_reports(output, unexpected)}"] if unexpected else []
    for o in outcomes:
        if o.status == "skipped":
            missing = o.reason.removeprefix("Server doesn't support ")
            if missing in REQUIRED_CAPABILITIES or not (o.reason.startswith("Server doesn't support")
                                                        or "not configured" in o.reason):
                problems.append(f"{o.cls}.{o.test} skipped: {o.reason}")
    return "\n".join(problems) or None


@pytest.fixture
def accounts_on_both(shared_dovecot: SharedDovecot) -> Iterator[dict[str, list[ImapEndpoint]]]:
    """Accounts on both servers; without Dovecot installed, on recall-lab only (the test then still checks
    recall-lab, and reports the missing proof of the allow-list as a skip)."""
    names = [f"live{n}" for n in range(len(GROUPS))]
    for ours in open_endpoints("recall-lab", shared_dovecot, *names):
        if dovecot_binary() is None:
            yield {"recall-lab": ours}
            return
        for dovecot in open_endpoints("dovecot", shared_dovecot, *names):
            yield {"dovecot": dovecot, "recall-lab": ours}


def test_livetest(accounts_on_both: dict[str, list[ImapEndpoint]], tmp_path: Path) -> None:
    """Both servers at once (the suite sleeps 10 s in test_idle; running them side by side halves the wait)."""
    running = {kind: start_suite(endpoints, tmp_path / kind) for kind, endpoints in accounts_on_both.items()}
    try:
        results = {kind: collect_suite(procs, tmp_path / kind) for kind, procs in running.items()}
    finally:
        for procs in running.values():
            for _, proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    for kind, (outcomes, _) in results.items():
        assert len(outcomes) >= 50, f"{kind}: only {len(outcomes)} results"
    problems = {"recall-lab": recall_lab_problems(*results["recall-lab"])}
    if "dovecot" in results:
        problems["dovecot"] = dovecot_problems(*results["dovecot"])
    report = "\n\n".join(f"== {kind}:\n{text}" for kind, text in problems.items() if text)
    assert not report, report
    if "dovecot" not in results:
        pytest.skip("dovecot not installed: recall-lab passed, but the allow-list was not proven against it")


def test_parse_verbose_reads_results_split_from_their_test() -> None:
    """The oracle's own check: a docstring line, or a log line printed mid-test, may stand between a test's
    name and its result; every result is still read, and a count mismatch would show a lost one."""
    output = (
        "test_append (imapclient.livetest.createUidTestClass.<locals>.LiveTest) ... ok\n"
        "test_idle (imapclient.livetest.TestGeneral)\n"
        "Start main connection idling ... FAIL\n"
        "test_move (imapclient.livetest.LiveTest) ... WARNING: server said BYE\n"
        "ok\n"
        "test_sort (imapclient.livetest.LiveTest) ... skipped \"Server doesn't support SORT\"\n"
        "test_small_read_timeout_fail (__main__.TestGeneral.test_small_read_timeout_fail)\n"
        "For ease, the login operation use the read/write timeout. ... FAIL\n"
        "test_small_read_timeout_fail (__main__.TestGeneral.test_small_read_timeout_fail)\n"
        "For ease, the login operation use the read/write timeout. ... ERROR\n"
        "Ran 5 tests in 0.5s\n"
    )
    found, ran = parse_verbose(output, ("TestGeneral", "TestWithUIDs"))
    assert ran == 5
    assert [(o.cls, o.test, o.status) for o in found] == [
        ("TestWithUIDs", "test_append", "ok"), ("TestGeneral", "test_idle", "FAIL"),
        ("TestWithUIDs", "test_move", "ok"), ("TestWithUIDs", "test_sort", "skipped"),
        ("TestGeneral", "test_small_read_timeout_fail", "ERROR")]  # its tearDown failed: printed twice, one test
    assert found[3].reason == "Server doesn't support SORT"
