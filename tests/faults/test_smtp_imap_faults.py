"""Each fault kind over real sockets: injected SMTP replies at each stage, delays, drops, relay outages
(421 and silent), IMAP disconnects; determinism under a seed; the relay's retry after a 4xx outage and the
sender's DSN after a 5xx; rules from the config and added or cleared at run time."""

from __future__ import annotations

import asyncio
import imaplib
import time
from collections.abc import AsyncIterator

import aiosmtplib
import pytest

from recall_lab.harness.config import LabConfig, default_config
from recall_lab.harness.lab import BlockingLab, Lab
from tests.smtp.smtp_helpers import LineClient, imap_messages, message


def _config(faults: dict[str, list[str]] | None = None, seed: int = 0) -> LabConfig:
    cfg = default_config()
    cfg.retry_delays = (0.02, 0.02, 0.02)
    for domain, rules in (faults or {}).items():
        cfg.domain(domain).faults = list(rules)
        cfg.domain(domain).fault_seed = seed
    return cfg


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with Lab(_config(), web=False) as running:
        yield running


async def _rcpt_replies(lab: Lab, n: int) -> list[str]:
    """n RCPTs to dave over the MX, each in a transaction of its own; the first line of each reply."""
    out = []
    async with LineClient.session(lab.mx("mail.example")) as c:
        await c.ehlo()
        for _ in range(n):
            await c.cmd("MAIL FROM:<x@partner.example>")
            out.append(await c.cmd("RCPT TO:<dave@mail.example>"))
            await c.cmd("RSET")
    return out


async def test_rcpt_rejected_for_the_next_n(lab):
    lab.faults("mail.example").add("rcpt=450:next=3")
    replies = await _rcpt_replies(lab, 5)
    assert [r[:9] for r in replies] == ["450 4.2.1"] * 3 + ["250 2.1.5"] * 2


@pytest.mark.parametrize(("rule", "stage"), [("mail=451", "mail"), ("data=554:status=5.7.1", "data"),
                                             ("ehlo=554", "ehlo")])
async def test_reject_at_each_stage(lab, rule, stage):
    lab.faults("corp.example").add(rule + ":on=submission")
    code = rule.split("=")[1].split(":")[0]
    async with LineClient.session(lab.submission("corp.example")) as c:
        ehlo = await c.ehlo()
        if stage == "ehlo":
            assert ehlo.startswith(f"{code} 5.7.1 "), ehlo
            assert (await c.cmd("MAIL FROM:<alice@corp.example>")).startswith("503")  # no greeting taken
            return
        assert (await c.login("alice@corp.example", "alice-password")).startswith("235")
        mail = await c.cmd("MAIL FROM:<alice@corp.example>")
        if stage == "mail":
            assert mail.startswith("451 4.3.0 "), mail
            return
        assert (await c.cmd("RCPT TO:<bob@corp.example>")).startswith("250")
        reply = await c.data(message("alice@corp.example", "bob@corp.example"))
        assert reply == "554 5.7.1 Refused (injected fault)"
    assert lab.store("corp.example").messages("bob@corp.example", "INBOX") == []


async def test_the_mx_greeting_refused_then_the_connection_closed(lab):
    lab.faults("mail.example").add("connect=554:on=mx:next=1")
    reader, writer = await asyncio.open_connection(*lab.mx("mail.example"))
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b"554 5.7.1 Refused (injected fault)\r\n"
    finally:
        writer.close()
    async with LineClient.session(lab.mx("mail.example")) as c:  # spent after one: the next is greeted
        assert (await c.ehlo()).startswith("250")


async def test_an_injected_421_closes_the_connection(lab):
    lab.faults("mail.example").add("mail=421")
    async with LineClient.session(lab.mx("mail.example")) as c:
        await c.ehlo()
        assert (await c.cmd("MAIL FROM:<x@partner.example>")).startswith("421 4.3.2")
        assert await asyncio.wait_for(c.reader.read(), 10) == b""


async def test_delay_before_the_reply(lab):
    lab.faults("mail.example").add("delay=0.3:at=rcpt:next=1")
    async with LineClient.session(lab.mx("mail.example")) as c:
        await c.ehlo()
        await c.cmd("MAIL FROM:<x@partner.example>")
        started = time.monotonic()
        assert (await c.cmd("RCPT TO:<dave@mail.example>")).startswith("250")
        assert time.monotonic() - started >= 0.3
        assert [f.action for f in lab.faults("mail.example").fired] == ["delay 0.3"]


@pytest.mark.parametrize("stage", ["connect", "ehlo", "mail", "rcpt", "data"])
async def test_dropped_connection_at_a_stage(lab, stage):
    lab.faults("mail.example").add(f"drop={stage}")
    # at connect the reset comes before the greeting (SMTPConnectError); later, mid-session
    with pytest.raises(aiosmtplib.SMTPConnectError if stage == "connect" else aiosmtplib.SMTPServerDisconnected):
        await aiosmtplib.send(message("x@partner.example", "dave@mail.example"), hostname=lab.mx("mail.example").host,
                              port=lab.mx("mail.example").port, sender="x@partner.example",
                              recipients=["dave@mail.example"], local_hostname="partner.example", timeout=10,
                              start_tls=False)
    assert lab.store("mail.example").messages("dave@mail.example", "INBOX") == []


async def test_silent_outage_never_answers():
    async with Lab(_config({"mail.example": ["outage=0-3600:mode=silent"]}), web=False) as lab:
        mx = lab.mx("mail.example")
        client = aiosmtplib.SMTP(hostname=mx.host, port=mx.port, local_hostname="partner.example", timeout=0.5,
                                 start_tls=False)
        with pytest.raises(aiosmtplib.SMTPTimeoutError):  # no greeting: the client's own timeout ends it
            await client.connect()
        client.close()
        assert lab.server("mail.example").mx_listener._silent  # held open by the server, closed at stop


async def test_relay_retries_after_a_421_outage_and_delivers():
    clock = [0.0]
    cfg = _config({"mail.example": ["outage=0-60"]})
    async with Lab(cfg, web=False, clock=lambda: clock[0]) as lab:
        await aiosmtplib.send(message("alice@corp.example", "dave@mail.example", "during the outage"),
                              **_submit(lab, "alice@corp.example", "dave@mail.example"))
        relay = lab.server("corp.example").relay
        await asyncio.wait_for(relay.wait_until(lambda: any(e.attempts for e in relay.pending())), 10)
        [entry] = relay.pending()
        assert "421 4.3.2" in entry.last_error
        assert lab.store("mail.example").messages("dave@mail.example", "INBOX") == []
        clock[0] = 61.0  # the outage is over on mail.example's clock: the next retry goes through
        await lab.wait_idle(10)
        assert len(lab.store("mail.example").messages("dave@mail.example", "INBOX")) == 1
        assert lab.store("corp.example").messages("alice@corp.example", "INBOX") == []  # no DSN
        events = [e for e in lab.activity.since() if e["event"] == "fault"]
        assert events and all(e["domain"] == "mail.example" for e in events)


async def test_sender_gets_a_dsn_after_a_5xx():
    async with Lab(_config({"mail.example": ["rcpt=550:status=5.7.1:on=mx"]}), web=False) as lab:
        await aiosmtplib.send(message("alice@corp.example", "dave@mail.example", "refused"),
                              **_submit(lab, "alice@corp.example", "dave@mail.example"))
        await lab.wait_idle(10)
        [bounce] = await imap_messages(lab, "alice@corp.example")
        assert b"Status: 5.7.1" in bounce and b"550 5.7.1 Refused (injected fault)" in bounce


def _submit(lab: Lab, sender: str, to: str) -> dict:
    ep = lab.submission(lab.domain_of(sender))
    return {"hostname": ep.host, "port": ep.port, "username": sender, "password": lab.password(sender),
            "sender": sender, "recipients": [to], "start_tls": False, "local_hostname": "localhost",
            "timeout": 10}


def _imap_cut_at(ep, user: str, password: str) -> int:
    """Commands that got an answer before the connection was cut (at most 10 NOOPs after LOGIN)."""
    imap = imaplib.IMAP4(ep.host, ep.port, timeout=10)
    done = 0
    try:
        imap.login(user, password)
        done += 1
        for _ in range(10):
            imap.noop()
            done += 1
    except (imaplib.IMAP4.abort, OSError):
        return done
    finally:
        try:
            imap.shutdown()
        except OSError:
            pass
    return done


async def test_imap_disconnect_after_n_commands(lab):
    lab.faults("mail.example").add("imap-drop=3")
    done = await asyncio.to_thread(_imap_cut_at, lab.imap("mail.example"), "dave@mail.example", "dave-password")
    assert done == 2  # imaplib's CAPABILITY, LOGIN and one NOOP answered; the fourth command line cut
    lab.faults("mail.example").clear()
    assert await asyncio.to_thread(_imap_cut_at, lab.imap("mail.example"), "dave@mail.example",
                                   "dave-password") == 11


def _imap_sequence(seed: int) -> list[int]:
    with BlockingLab(_config({"mail.example": ["imap-drop=1:p=0.3"]}, seed=seed), web=False) as lab:
        return [_imap_cut_at(lab.imap("mail.example"), "dave@mail.example", "dave-password") for _ in range(6)]


def _smtp_sequence(seed: int) -> list[str]:
    async def run() -> list[str]:
        async with Lab(_config({"mail.example": ["rcpt=450:p=0.5", "rcpt=550:p=0.3"]}, seed=seed),
                       web=False) as lab:
            return [r[:3] for r in await _rcpt_replies(lab, 24)]

    return asyncio.run(run())


def test_same_seed_same_faults_over_sockets():
    first = _smtp_sequence(11)
    assert first == _smtp_sequence(11)
    assert {"450", "550", "250"} <= set(first)
    assert first != _smtp_sequence(12)
    cuts = _imap_sequence(5)
    assert cuts == _imap_sequence(5) and len(set(cuts)) > 1


def test_rules_added_and_cleared_from_a_test_thread():
    with BlockingLab(_config(), web=False) as lab:
        lab.faults("mail.example").add("rcpt=452", next=1)
        assert lab.faults("mail.example").rules[0].next == 1
        replies = lab.call(_rcpt_replies(lab.lab, 2))
        assert [r[:3] for r in replies] == ["452", "250"]
        lab.faults("mail.example").add("rcpt=450")
        lab.faults("mail.example").clear()
        assert [r[:3] for r in lab.call(_rcpt_replies(lab.lab, 1))] == ["250"]
