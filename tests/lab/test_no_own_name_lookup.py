"""Nothing in the lab resolves a name: not the machine's own (getfqdn), not any other.

Why: SMTP clients created without a local name (aiosmtplib, smtplib) and `email.utils.make_msgid()` without a
domain call `socket.getfqdn()`, a DNS query on a machine whose own name is not in /etc/hosts: the demo went
from 11 s to 55 s there. Every client and server names itself explicitly (its user's domain, or the domain it
serves), and these tests make every lookup fail, in this process (the lab runs in it) and in `recall-lab`
subprocesses (a sitecustomize shim on PYTHONPATH, tests/lab/own_name_shim), while mail flows every way the
lab has: submission, delivery, relay between domains, recall in both modes, desktop and web clients, the
legacy clients' notices, the pytest plugin, the recall agents and the `send`/`recall`/`demo` commands.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recall_lab.harness.commands.send import _submit, build_message
from recall_lab.harness.lab import BlockingLab, Lab
from recall_lab.harness.matrix import MatrixOptions, run_matrix
from recall_lab.harness.pytest_plugin import MailLab
from recall_lab.harness.recall_agent import RecallAgent, SyncRecallAgent
from recall_lab.harness.scenarios import Scenario
from recall_lab.harness.scenarios.distributions import fixed
from tests.e2e.conftest import cli_env, run_cli, start_serve
from tests.lab.own_name_shim.own_name_guard import install

SHIM = Path(__file__).with_name("own_name_shim")


class Lookups(list[str]):
    """Every lookup attempted; each one fails, so a lab that needs one also breaks loudly."""

    def refuse(self, description: str) -> None:
        self.append(description)
        raise OSError(f"name lookup refused by the test: {description}")


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Lookups:
    seen = Lookups()
    install(monkeypatch.setattr, seen.refuse)
    return seen


def _s(name: str, **kw) -> Scenario:
    kw.setdefault("recall_delay", fixed(300))
    kw.setdefault("observe_for", 120)
    return Scenario(name=name, condition=name, summary=name, **kw)


async def test_matrix_with_every_client_both_modes_and_relay_makes_no_lookup(lookups: Lookups) -> None:
    """Desktop and web recipients, a recipient at the other domain (relay), both recall modes (the legacy
    clients mail notices back), delayed send: every SMTP connection of the engine and the clients."""
    scenarios = [_s("unread"), _s("read-first", open_delay=fixed(60)),
                 _s("web", client="web", page_load_interval=fixed(350), preview=False),
                 _s("external", recipient="external", open_delay=fixed(600)),
                 _s("delayed", recipient="external", delayed_send=60, recall_delay=fixed(20))]
    result = await run_matrix(MatrixOptions(scenarios=scenarios, trials=1, seed=3, concurrency=1,
                                            transcripts=False))
    errors = [(t.scenario, t.mode, t.error) for cell in result.cells.values() for t in cell.trials if t.error]
    assert lookups == [] and errors == []
    assert {(s, m) for s, m in result.cells} == {(s.name, m) for s in scenarios for m in ("cloud", "legacy")}


async def test_send_command_and_async_agent_make_no_lookup(lookups: Lookups) -> None:
    """`recall-lab send`'s submission (including a sender with no domain to name the Message-ID after) and the
    async recall agent, to a local and a remote recipient."""
    async with Lab() as lab:
        sub = lab.submission("corp.example")
        msg = build_message("alice@corp.example", ["bob@corp.example", "dave@mail.example"], [], "Q3", "x\n")
        await _submit(msg, host=sub.host, port=sub.port, user="alice@corp.example",
                      password=lab.password("alice@corp.example"),
                      recipients=["bob@corp.example", "dave@mail.example"], starttls=False, context=None)
        assert "@" in build_message("alice", ["bob@corp.example"], [], "s", "b")["Message-ID"]
        agent = RecallAgent(lab, "alice@corp.example", lab.password("alice@corp.example"))
        handle = await agent.recall(str(msg["Message-ID"]))
        report = await handle.report(timeout=10, until_complete=True)
        assert report.statuses["bob@corp.example"] == "recalled"
    assert lookups == []


def test_plugin_send_and_sync_agent_make_no_lookup(lookups: Lookups) -> None:
    """The pytest plugin's `mail_lab.send` (smtplib) and the synchronous agent (smtplib), from a test thread."""
    with BlockingLab() as blocking:
        lab = MailLab(blocking)
        mid = lab.send("alice@corp.example", ["bob@corp.example", "erin@mail.example"], "Plan")
        lab.wait_for_message("bob@corp.example", mid)
        lab.wait_for_message("erin@mail.example", mid)
        agent = SyncRecallAgent(blocking, "alice@corp.example", lab.password("alice@corp.example"))
        report = agent.recall(mid).report(timeout=10, until_complete=True)
        assert report.statuses["bob@corp.example"] == "recalled"
    assert lookups == []


def _shim_env(log: Path) -> dict[str, str]:
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SHIM), env.get("PYTHONPATH")]))
    env.update({"OWN_NAME_SHIM": "raise", "OWN_NAME_LOG": str(log), "OWN_NAME_ACTIVE": f"{log}.active"})
    return env


def test_commands_in_subprocesses_make_no_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` + `send` + `recall`, and a short `demo`, each a process whose every lookup fails and is logged."""
    log = tmp_path / "lookups.log"
    for name, value in _shim_env(log).items():
        monkeypatch.setenv(name, value)  # run_cli and start_serve pass os.environ on
    probe = run_cli("--help")
    assert probe.returncode == 0, probe.stderr
    served = start_serve(tmp_path)
    try:
        endpoints = str(served.endpoints_file)
        sent = run_cli("send", "--endpoints", endpoints, "--from", "alice@corp.example", "--to", "bob@corp.example",
                       "--to", "dave@mail.example", "--subject", "Q3", "--body", "x")
        assert sent.returncode == 0, sent.stderr
        recalled = run_cli("recall", "--endpoints", endpoints, "--user", "alice@corp.example",
                           "--message-id", sent.stdout.strip(), "--wait", "10")
        assert recalled.returncode == 0, recalled.stderr
    finally:
        code, err = served.stop()
    assert code == 0 and "Traceback" not in err, err
    demo = run_cli("demo", "--trials", "2", "--scenario", "same-org-desktop", "--scenario", "web-client",
                   "--scenario", "external-provider", timeout=120)
    assert demo.returncode == 0, demo.stderr
    assert "Traceback" not in demo.stderr
    lines = log.read_text().splitlines() if log.exists() else []
    assert lines == [], "\n".join(lines)
    guarded = Path(f"{log}.active").read_text().split()
    assert len(set(guarded)) >= 5, "every recall-lab process (help, serve, send, recall, demo) ran guarded"


def test_the_shim_does_catch_a_lookup(tmp_path: Path) -> None:
    """The subprocess test above could pass by not loading its shim: this one proves the shim is live."""
    log = tmp_path / "lookups.log"
    lookup = "import socket, email.utils; email.utils.make_msgid()"  # own-name lookup on purpose
    result = subprocess.run([sys.executable, "-c", lookup],
                            env=_shim_env(log), capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "refused by the test shim" in result.stderr
    assert "getfqdn" in log.read_text()
