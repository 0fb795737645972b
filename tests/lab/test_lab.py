"""The Lab as a whole: endpoints, ports, TLS, transcripts, clean shutdown, restarts with a Maildir store."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
import threading
from email import message_from_bytes
from email import policy as email_policy

import aiosmtplib
import imapclient
import pytest

from recall_lab.fake_servers.pipeline import Verdict, register_policy, unregister_policy
from recall_lab.fake_servers.transcript import TranscriptRecorder
from recall_lab.harness.config import DomainConfig, LabConfig, default_config
from recall_lab.harness.lab import BlockingLab, Lab, LabStartError
from tests.smtp.smtp_helpers import LineClient, message


def _args(lab, user):
    domain = lab.domain_of(user)
    ep = lab.submission(domain)
    return {"hostname": ep.host, "port": ep.port, "username": user, "password": lab.password(user),
            "start_tls": False, "local_hostname": domain}


def _count(lab, user, mailbox="INBOX"):
    return len(lab.store(lab.domain_of(user)).messages(user, mailbox))


async def test_endpoints_shape():
    async with Lab() as lab:
        ep = lab.endpoints()
        assert set(ep) == {"domains", "web"}
        web = ep["web"]
        assert web["host"] == "127.0.0.1" and web["port"] > 0 and len(web["token"]) >= 16
        assert web["console"] == f"http://127.0.0.1:{web['port']}/?token={web['token']}"
        assert list(ep["domains"]) == ["corp.example", "mail.example"]
        corp = ep["domains"]["corp.example"]
        assert corp["role"] == "organisation"
        assert ep["domains"]["mail.example"]["role"] == "external"
        for key in ("imap", "submission", "mx"):
            assert corp[key]["host"] == "127.0.0.1" and isinstance(corp[key]["port"], int) and corp[key]["port"] > 0
        assert corp["users"] == {"alice@corp.example": "alice-password", "bob@corp.example": "bob-password",
                                 "carol@corp.example": "carol-password"}
        assert ep["domains"]["mail.example"]["users"] == {"dave@mail.example": "dave-password",
                                                          "erin@mail.example": "erin-password"}
        assert lab.domains == ["corp.example", "mail.example"]
        assert lab.imap("corp.example").port == corp["imap"]["port"]
        assert lab.password("ALICE@corp.example") == "alice-password"
        assert lab.users("mail.example") == ["dave@mail.example", "erin@mail.example"]
        assert lab.domain_of("erin@mail.example") == "mail.example"
        assert lab.role("corp.example") == "organisation"
    async with Lab(web=False) as lab:
        assert set(lab.endpoints()) == {"domains"} and lab.web is None
        assert lab.store("corp.example").users() and lab.audit_log("corp.example") == []


def _free_block(width: int = 20) -> int:
    """A port base with `width` free ports above it (best effort; the caller retries on a race)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + width >= 65535:
            continue
        free = True
        for port in range(base, base + width):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    free = False
                    break
        if free:
            return base
    pytest.skip("no block of free ports found")


async def test_port_base_gives_documented_ports():
    for _ in range(5):
        base = _free_block()
        try:
            async with Lab(port_base=base) as lab:
                assert lab.imap("corp.example").port == base
                assert lab.submission("corp.example").port == base + 1
                assert lab.mx("corp.example").port == base + 2
                assert lab.imap("mail.example").port == base + 10
                assert lab.submission("mail.example").port == base + 11
                assert lab.mx("mail.example").port == base + 12
                return
        except LabStartError:
            continue  # another test took a port meanwhile
    pytest.fail("could not start on a free port block")


async def test_port_in_use_is_one_line_error():
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(LabStartError) as info:
            async with Lab(port_base=port - 2):  # corp.example's MX lands on the blocked port
                pass
    text = str(info.value)
    assert "\n" not in text
    assert re.match(r"port 127\.0\.0\.1:\d+ \(corp\.example \w+\) is already in use", text), text


async def _snapshot():
    """Open fds, and the threads alive now. The loop's default executor (asyncio_N: getaddrinfo) is a pool that
    may grow on its own and is not the lab's to stop; threads other tests left behind may end meanwhile, so the
    caller compares sets: what counts is a thread that exists after the cycles and did not before."""
    for _ in range(5):  # let transports closed by other tests' clients finish their close callbacks
        await asyncio.sleep(0)
    threads = {t for t in threading.enumerate() if not t.name.startswith("asyncio_")}
    return (len(os.listdir("/proc/self/fd")), threads)


async def test_hundred_start_stop_cycles_leave_nothing_behind():
    cfg = default_config()
    async with Lab(cfg) as lab:  # warm-up: imports, lazily built caches
        await aiosmtplib.send(message("alice@corp.example", "dave@mail.example"), sender="alice@corp.example",
                              recipients=["dave@mail.example"], **_args(lab, "alice@corp.example"))
        await lab.wait_idle()
    tasks_before = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    fds_before, threads_before = await _snapshot()
    for cycle in range(100):
        async with Lab(cfg) as lab:
            if cycle % 10 == 0:
                # traffic, and a client left connected while the lab stops
                await aiosmtplib.send(message("alice@corp.example", "dave@mail.example"),
                                      sender="alice@corp.example", recipients=["dave@mail.example"],
                                      **_args(lab, "alice@corp.example"))
                await lab.wait_idle()
                idle = await LineClient.connect(lab.mx("corp.example"))
                await idle.ehlo()
                reader, writer = await asyncio.open_connection(*lab.imap("corp.example"))
                await reader.readline()
        if cycle % 10 == 0:
            assert await idle.reader.read() == b""  # the lab closed it
            await idle.close()
            writer.close()
            await writer.wait_closed()
    tasks_after = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert tasks_after - tasks_before == set()
    fds_after, threads_after = await _snapshot()
    assert fds_after <= fds_before
    assert threads_after - threads_before == set()


async def test_starttls_then_auth_with_trustme_certificates():
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with Lab(tls=server_ctx) as lab:
        async with LineClient.session(lab.submission("corp.example")) as c:
            ehlo = await c.ehlo()
            assert "STARTTLS" in ehlo and "AUTH" not in ehlo
            assert (await c.login("alice@corp.example", "alice-password")).startswith("538 5.7.11")
            assert (await c.cmd("MAIL FROM:<alice@corp.example>")).startswith("530 5.7.0")
        async with LineClient.session(lab.mx("corp.example")) as mx:
            ehlo = await mx.ehlo()
            assert "STARTTLS" in ehlo and "AUTH" not in ehlo  # other MTAs' opportunistic TLS; never AUTH on MX
        ep = lab.submission("corp.example")
        await aiosmtplib.send(message("alice@corp.example", "bob@corp.example", "over tls"),
                              sender="alice@corp.example", recipients=["bob@corp.example"], hostname=ep.host,
                              port=ep.port, username="alice@corp.example", password="alice-password",
                              start_tls=True, tls_context=client_ctx, local_hostname="corp.example")
        [rec] = lab.store("corp.example").messages("bob@corp.example", "INBOX")
        raw = lab.store("corp.example").fetch_raw("bob@corp.example", "INBOX", rec.uid)
        assert "ESMTPSA" in message_from_bytes(raw, policy=email_policy.default)["Received"]

        # Cross-domain: corp.example's relay finds STARTTLS at mail.example's MX and uses it.
        await aiosmtplib.send(message("alice@corp.example", "dave@mail.example", "relayed over tls"),
                              sender="alice@corp.example", recipients=["dave@mail.example"], hostname=ep.host,
                              port=ep.port, username="alice@corp.example", password="alice-password",
                              start_tls=True, tls_context=client_ctx, local_hostname="corp.example")
        await lab.wait_idle()
        [rec] = lab.store("mail.example").messages("dave@mail.example", "INBOX")
        raw = lab.store("mail.example").fetch_raw("dave@mail.example", "INBOX", rec.uid)
        received = message_from_bytes(raw, policy=email_policy.default).get_all("Received")
        assert "by mail.example" in received[0] and " with ESMTPS id " in received[0], received


async def test_smtp_transcripts_record_both_directions_and_mask_secrets():
    rec = TranscriptRecorder()
    async with Lab(transcripts=rec) as lab:
        await aiosmtplib.send(message("alice@corp.example", "dave@mail.example", body="line\r\n" * 100),
                              sender="alice@corp.example", recipients=["dave@mail.example"],
                              **_args(lab, "alice@corp.example"))
        await lab.wait_idle()
    text = rec.text()
    sub = [ln for ln in rec.lines if ln.session.startswith("smtp-submission#")]
    mx = [ln for ln in rec.lines if ln.session.startswith("smtp-mx#")]
    assert sub and mx
    said = [(ln.direction, ln.text) for ln in sub]
    assert any(d == "C" and t.startswith("MAIL FROM:<alice@corp.example>") for d, t in said)
    assert any(d == "S" and t.startswith("250 2.0.0 Ok: queued as") for d, t in said)
    assert any(d == "C" and re.fullmatch(r"<\d+ octets>", t) for d, t in said)
    assert "alice-password" not in text
    assert any(d == "C" and (t.startswith("AUTH PLAIN ********") or t == "********") for d, t in said)
    assert re.search(r"^\S+Z smtp-mx#\d+ S: 220 ", text, re.M)


def test_blocking_lab_with_imapclient():
    with BlockingLab() as lab:
        ep = lab.submission("corp.example")

        async def send():
            await aiosmtplib.send(message("alice@corp.example", "dave@mail.example", "sync world"),
                                  sender="alice@corp.example", recipients=["dave@mail.example"], hostname=ep.host,
                                  port=ep.port, username="alice@corp.example", password="alice-password",
                                  start_tls=False, local_hostname="corp.example")

        lab.call(send())
        lab.wait_idle()
        imap = lab.imap("mail.example")
        with imapclient.IMAPClient(imap.host, imap.port, ssl=False, timeout=10) as client:
            client.login("dave@mail.example", lab.password("dave@mail.example"))
            client.select_folder("INBOX")
            [uid] = client.search(["SUBJECT", "sync world"])
            assert b"sync world" in client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]
        assert lab.call(lambda: len(lab.store("corp.example").messages("alice@corp.example", "Sent"))) == 1
    assert not [t for t in threading.enumerate() if t.name == "recall-lab"]


@pytest.mark.parametrize("outage", ["paused", "target-down"])
async def test_maildir_lab_restart_delivers_accepted_mail_exactly_once(tmp_path, outage):
    cfg = default_config()
    cfg.retry_delays = (0.01, 0.01, 0.01)
    store = f"maildir:{tmp_path}"
    if outage == "paused":
        first_cfg = cfg
    else:
        # only corp.example runs, and mail.example's route points at a port where nobody listens
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        first_cfg = LabConfig(domains=[cfg.domains[0]], retry_delays=(60.0,),
                              routes={"mail.example": f"127.0.0.1:{dead}"})
    async with Lab(first_cfg, store=store) as lab:
        if outage == "paused":
            lab.pause_relay("corp.example")
        await aiosmtplib.send(message("alice@corp.example", "dave@mail.example", "survives",
                                      extra="Message-ID: <survives@corp.example>\r\n"),
                              sender="alice@corp.example", recipients=["dave@mail.example", "bob@corp.example"],
                              **_args(lab, "alice@corp.example"))
        if outage == "target-down":
            # the first attempt fails (connection refused); then the entry waits 60 s for its retry
            relay = lab.server("corp.example").relay
            await asyncio.wait_for(relay.wait_until(lambda: relay.pending()[0].attempts >= 1), 10)
        [entry] = lab.relay_pending("corp.example")
        assert entry.recipients == ["dave@mail.example"]
        assert _count(lab, "bob@corp.example") == 1
    assert list((tmp_path / "corp.example" / "spool" / "relay").glob("*.msg"))
    for _ in range(2):  # the second start must not deliver it again
        async with Lab(cfg, store=store) as lab:
            lab.retry_relay_now()
            await lab.wait_idle()
            assert lab.relay_pending("corp.example") == []
            assert _count(lab, "dave@mail.example") == 1
            assert _count(lab, "bob@corp.example") == 1
            assert _count(lab, "alice@corp.example", "Sent") == 1
            assert _count(lab, "alice@corp.example") == 0  # no bounce
    assert not list((tmp_path / "corp.example" / "spool" / "relay").glob("*.msg"))


class _Holder:
    name = "test_holder"

    def __init__(self, settings, services):
        pass

    async def on_delivery(self, delivery, services):
        return Verdict.HOLD if "hold" in str(delivery.message["Subject"]) else Verdict.CONTINUE


async def test_held_messages_survive_a_restart(tmp_path):
    register_policy("test_holder", _Holder)
    try:
        cfg = default_config()
        cfg.domains[0].pipeline = ["test_holder"]
        store = f"maildir:{tmp_path}"
        async with Lab(cfg, store=store) as lab:
            await aiosmtplib.send(message("alice@corp.example", "dave@mail.example", "hold me"),
                                  sender="alice@corp.example", recipients=["dave@mail.example"],
                                  **_args(lab, "alice@corp.example"))
            [held] = lab.services("corp.example").held()
        async with Lab(cfg, store=store) as lab:
            services = lab.services("corp.example")
            [again] = services.held()
            assert again.queue_id == held.queue_id and again.recipients == ["dave@mail.example"]
            await services.release(again.queue_id)
            await lab.wait_idle()
            assert _count(lab, "dave@mail.example") == 1
            assert _count(lab, "alice@corp.example", "Sent") == 1
        async with Lab(cfg, store=store) as lab:
            assert lab.services("corp.example").held() == []
    finally:
        unregister_policy("test_holder")


async def test_custom_domains_from_python_objects():
    cfg = LabConfig(domains=[DomainConfig.with_users("a.example", "organisation", ["ann"]),
                             DomainConfig(name="b.example", users={"bo": "pw"})])
    async with Lab(cfg) as lab:
        assert lab.password("bo@b.example") == "pw"
        ep = lab.submission("a.example")
        await aiosmtplib.send(message("ann@a.example", "bo@b.example"), sender="ann@a.example",
                              recipients=["bo@b.example"], hostname=ep.host, port=ep.port,
                              username="ann@a.example", password="ann-password", start_tls=False,
                              local_hostname="a.example")
        await lab.wait_idle()
        assert _count(lab, "bo@b.example") == 1
