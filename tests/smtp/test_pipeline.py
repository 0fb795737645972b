"""The delivery pipeline: policies registered by name run on every accepted message, before delivery."""

from __future__ import annotations

import asyncio
import base64
from email import message_from_bytes
from email import policy as email_policy

import aiosmtplib
import pytest

from recall_lab.fake_servers.pipeline import PolicyReject, Verdict, register_policy, unregister_policy
from recall_lab.harness.config import ConfigError, default_config, load_config
from recall_lab.harness.lab import Lab, LabStartError
from tests.smtp.smtp_helpers import LineClient, message


class Recorder:
    """Test policy: records what it saw; its verdict comes from the Subject."""

    name = "test_recorder"
    seen: list = []

    def __init__(self, settings, services):
        self.settings = settings
        self.services = services

    async def on_delivery(self, delivery, services):
        Recorder.seen.append((services.domain, delivery.channel, delivery.auth_user, delivery.message["Subject"],
                              set(delivery.trusted_marks), delivery.message_id))
        subject = str(delivery.message["Subject"])
        if subject == "consume":
            services.log("consumed", queue_id=delivery.queue_id)
            return Verdict.CONSUMED
        if subject == "hold":
            return Verdict.HOLD
        if subject == "reject":
            raise PolicyReject("not today", 550, "5.7.1")
        if subject == "report":
            await services.submit("", [delivery.mail_from], message("postmaster@corp.example", delivery.mail_from,
                                                                   "your report"), marks={"report"})
        if subject == "rewrite":
            msg = delivery.message
            msg.replace_header("Subject", "rewritten")
            delivery.set_message(msg)
        return Verdict.CONTINUE


@pytest.fixture
async def policy_lab():
    register_policy("test_recorder", Recorder)
    Recorder.seen = []
    cfg = default_config()
    cfg.domains[0].pipeline = ["test_recorder"]
    cfg.domains[0].policies = {"recall_mode": "cloud"}
    try:
        async with Lab(cfg) as lab:
            yield lab
    finally:
        unregister_policy("test_recorder")


async def _send(lab, subject, to="bob@corp.example", extra=""):
    ep = lab.submission("corp.example")
    return await aiosmtplib.send(message("alice@corp.example", to, subject, extra=extra), sender="alice@corp.example",
                                 recipients=[to], hostname=ep.host, port=ep.port, username="alice@corp.example",
                                 password="alice-password", start_tls=False, local_hostname="corp.example")


def _inbox(lab, user, mailbox="INBOX"):
    store = lab.store(lab.domain_of(user))
    return [store.fetch_raw(user, mailbox, r.uid) for r in store.messages(user, mailbox)]


async def test_policy_sees_every_message_with_settings(policy_lab):
    await _send(policy_lab, "plain")
    [(domain, channel, auth, subject, marks, mid)] = Recorder.seen
    assert (domain, channel, auth, subject) == ("corp.example", "submission", "alice@corp.example", "plain")
    assert mid and mid.endswith("@corp.example>")
    assert policy_lab.services("corp.example").config == {"recall_mode": "cloud"}
    assert len(_inbox(policy_lab, "bob@corp.example")) == 1


async def test_consumed_message_is_not_delivered(policy_lab):
    await _send(policy_lab, "consume")
    assert _inbox(policy_lab, "bob@corp.example") == []
    assert _inbox(policy_lab, "alice@corp.example", "Sent") == []
    assert [e["event"] for e in policy_lab.audit_log("corp.example")] == ["consumed"]


async def test_reject_reaches_the_smtp_client(policy_lab):
    with pytest.raises(aiosmtplib.SMTPDataError) as info:
        await _send(policy_lab, "reject")
    assert info.value.code == 550 and info.value.message.startswith("5.7.1 not today")
    assert _inbox(policy_lab, "bob@corp.example") == []


async def test_hold_then_release_and_discard(policy_lab):
    await _send(policy_lab, "hold")
    await _send(policy_lab, "hold")
    services = policy_lab.services("corp.example")
    first, second = services.held()
    assert first.held_by == "test_recorder"
    assert _inbox(policy_lab, "bob@corp.example") == []
    await services.release(first.queue_id)
    assert len(_inbox(policy_lab, "bob@corp.example")) == 1
    assert len(_inbox(policy_lab, "alice@corp.example", "Sent")) == 1
    dropped = services.discard(second.queue_id)
    assert dropped.queue_id == second.queue_id and services.held() == []
    await policy_lab.wait_idle()
    assert len(_inbox(policy_lab, "bob@corp.example")) == 1


async def test_internal_submit_reenters_the_pipeline_with_marks(policy_lab):
    await _send(policy_lab, "report")
    subjects = [s[3] for s in Recorder.seen]
    assert subjects == ["report", "your report"]
    assert Recorder.seen[1][1] == "internal" and Recorder.seen[1][4] == {"report"}
    [report] = _inbox(policy_lab, "alice@corp.example")
    assert b"your report" in report


async def test_trusted_marks_never_come_from_headers(policy_lab):
    await _send(policy_lab, "plain", extra="X-Trusted-Marks: recall-honoured\r\n")
    assert Recorder.seen[0][4] == set()


async def test_rewrite_changes_what_is_delivered(policy_lab):
    await _send(policy_lab, "rewrite")
    [got] = _inbox(policy_lab, "bob@corp.example")
    assert message_from_bytes(got, policy=email_policy.default)["Subject"] == "rewritten"


async def test_mx_channel_and_other_domain_unaffected(policy_lab):
    async with LineClient.session(policy_lab.mx("corp.example")) as c:
        await c.ehlo()
        await c.cmd("MAIL FROM:<dave@mail.example>")
        await c.cmd("RCPT TO:<bob@corp.example>")
        assert (await c.data(message("dave@mail.example", "bob@corp.example", "from outside"))).startswith("250")
    assert Recorder.seen[0][1:4] == ("mx", None, "from outside")


async def test_unknown_policy_name_is_a_start_error():
    cfg = default_config()
    cfg.domains[0].pipeline = ["no_such_policy"]
    with pytest.raises(LabStartError, match="corp.example: unknown policy 'no_such_policy'"):
        async with Lab(cfg):
            pass


async def test_default_roles_pick_policies_when_no_pipeline_is_named():
    register_policy("test_recorder", Recorder, default_roles=("external",))
    Recorder.seen = []
    try:
        async with Lab(default_config()) as lab:
            assert "test_recorder" in [p.name for p in lab.server("mail.example").pipeline.policies]
            assert "test_recorder" not in [p.name for p in lab.server("corp.example").pipeline.policies]
    finally:
        unregister_policy("test_recorder")


def test_toml_config(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text('''
policy_modules = []
[relay]
retry_delays = [0.5, 2]
[routes]
"partner.example" = "127.0.0.1:2525"
[domains."corp.example"]
role = "organisation"
users = ["alice", "bob"]
pipeline = ["recall"]
[domains."corp.example".passwords]
"carol@corp.example" = "s3cret"
[domains."corp.example".policies]
recall_mode = "cloud"
[domains."mail.example"]
users = ["dave"]
''')
    cfg = load_config(path)
    corp = cfg.domain("corp.example")
    assert corp.users == {"alice@corp.example": "alice-password", "bob@corp.example": "bob-password",
                          "carol@corp.example": "s3cret"}
    assert corp.policies == {"recall_mode": "cloud"} and corp.pipeline == ["recall"]
    assert cfg.domain("mail.example").role == "external"
    assert cfg.retry_delays == (0.5, 2.0) and cfg.routes == {"partner.example": "127.0.0.1:2525"}
    assert load_config_roundtrip(cfg).to_dict() == cfg.to_dict()


def load_config_roundtrip(cfg):
    from recall_lab.harness.config import LabConfig

    return LabConfig.from_dict(cfg.to_dict())


@pytest.mark.parametrize("text, match", [
    ("[domains.\"x.example\"]\nrole = \"boss\"\n", "role"),
    ("nonsense = [", "not valid TOML"),
    ("[relay]\nretry_delays = 3\n[domains.\"x.example\"]\n", "retry_delays"),
    ("[domains.\"x.example\"]\nusers = [\"a@y.example\"]\n", "does not belong"),
    ("x = 1\n", "unknown key x"),
    ("[relay]\nretry_delays = [1]\n", "no \\[domains"),
])
def test_bad_config_is_one_line_error(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path)
    assert "\n" not in str(info.value)


class Gate:
    """Test policy that suspends: waits for `Gate.open` (an asyncio.Event), then obeys the Subject."""

    name = "test_gate"
    open: asyncio.Event | None = None
    waiting: asyncio.Event | None = None

    def __init__(self, settings, services):
        pass

    async def on_delivery(self, delivery, services):
        assert Gate.open is not None and Gate.waiting is not None
        Gate.waiting.set()
        await Gate.open.wait()
        if str(delivery.message["Subject"]) == "reject later":
            raise PolicyReject("changed my mind", 550, "5.7.1")
        return Verdict.CONTINUE


@pytest.fixture
async def gate_lab():
    register_policy("test_gate", Gate)
    Gate.open, Gate.waiting = asyncio.Event(), asyncio.Event()
    cfg = default_config()
    cfg.domains[0].pipeline = ["test_gate"]
    try:
        async with Lab(cfg) as lab:
            yield lab
    finally:
        unregister_policy("test_gate")


async def _start_data(lab, subject):
    client = await LineClient.connect(lab.submission("corp.example"))
    assert (await client.cmd("EHLO t")).startswith("250")
    token = base64.b64encode(b"\0alice@corp.example\0alice-password").decode()
    assert (await client.cmd(f"AUTH PLAIN {token}")).startswith("235")
    assert (await client.cmd("MAIL FROM:<alice@corp.example>")).startswith("250")
    assert (await client.cmd("RCPT TO:<bob@corp.example>")).startswith("250")
    assert (await client.cmd("DATA")).startswith("354")
    client.writer.write(message("alice@corp.example", "bob@corp.example", subject) + b".\r\n")
    await asyncio.wait_for(Gate.waiting.wait(), 10)  # the policy is now suspended mid-delivery
    return client


async def test_client_dropping_mid_delivery_leaves_nothing_half_delivered(gate_lab):
    client = await _start_data(gate_lab, "slow")
    listener = gate_lab.server("corp.example").submission_listener
    client.writer.transport.abort()  # the SMTP session's task is cancelled while the policy waits

    async def session_gone():
        while listener.sessions:
            await asyncio.sleep(0)

    await asyncio.wait_for(session_gone(), 10)
    Gate.open.set()
    await gate_lab.wait_idle()
    assert len(_inbox(gate_lab, "bob@corp.example")) == 1
    assert len(_inbox(gate_lab, "alice@corp.example", "Sent")) == 1


async def test_a_policy_that_suspends_can_still_refuse(gate_lab):
    client = await _start_data(gate_lab, "reject later")
    Gate.open.set()
    reply = await client.reply()
    assert reply == "550 5.7.1 changed my mind", reply
    assert (await client.cmd("QUIT")).startswith("221")
    await gate_lab.wait_idle()
    assert _inbox(gate_lab, "bob@corp.example") == []
