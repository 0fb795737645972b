"""AUTHENTICATE SCRAM-SHA-256 (fake_servers/imap/scram.py): RFC 7677's example, scramp's client against the
session (sans-I/O) and the server (a socket), the login throttle, and what a hostile client may send.

Why scramp's client drives most exchanges: the proof a real client computes is what the server must accept;
a proof computed here by hand would only show that the test agrees with itself.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scramp import ScramClient

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.guard import ConnectionGuard, FailureVerdict, GuardLimits, LoginThrottle
from recall_lab.fake_servers.imap import scram
from recall_lab.fake_servers.imap.capabilities import capabilities
from recall_lab.fake_servers.imap.server import ImapServer
from recall_lab.fake_servers.imap.session import ImapSession, SessionConfig

from .conftest import ALICE, ALICE_PW
from .rawclient import Raw
from .sansio import FakeIO

MECH = "SCRAM-SHA-256"


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def unb64(line: bytes) -> str:
    assert line.startswith(b"+ "), line
    return base64.b64decode(line[2:].strip()).decode()


class ThrottledIO(FakeIO):
    """Records what the session asks of its adapter: holds, and (when `offloading`) work for a thread."""

    def __init__(self, offloading: bool = False) -> None:
        super().__init__()
        self.holds: list[float] = []
        self.work: list[Callable[[], object]] = []
        if offloading:
            self.offload = self.work.append  # type: ignore[method-assign]

    def hold(self, seconds: float) -> None:
        self.holds.append(seconds)


def new_session(store, accounts, verdicts=(), penalties=(), offloading=False, **config):
    io = ThrottledIO(offloading)
    failures = iter(verdicts)
    waits = iter(penalties)
    throttle = LoginThrottle(penalty=lambda: next(waits, 0.0), failed=lambda: next(failures))
    s = ImapSession(store, accounts, io, SessionConfig(**config), throttle=throttle)
    s.greeting()
    io.out.clear()
    return s, io


def send(s: ImapSession, io: ThrottledIO, data: bytes) -> bytes:
    s.feed(data + b"\r\n")
    out = bytes(io.out)
    io.out.clear()
    return out


def exchange(s, io, user: str, password: str, initial: bool = False, tag: bytes = b"a1") -> bytes:
    """A whole exchange driven by scramp's client; the server's last answer (the tagged line)."""
    client = ScramClient([MECH], user, password)
    first = b64(client.get_client_first())
    if initial:
        out = send(s, io, tag + b" AUTHENTICATE " + MECH.encode() + b" " + first)
    else:
        assert send(s, io, tag + b" AUTHENTICATE " + MECH.encode()) == b"+ \r\n"
        out = send(s, io, first)
    client.set_server_first(unb64(out))
    out = send(s, io, b64(client.get_client_final()))
    if not out.startswith(b"+ "):
        return out
    client.set_server_final(unb64(out))  # raises unless the server proved it knows the password too
    return send(s, io, b"")


@pytest.fixture(autouse=True)
def fresh_keys():
    scram.forget_cache()
    yield
    scram.forget_cache()


# -- the happy paths -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("initial", [False, True], ids=["continuation", "sasl-ir"])
def test_scramp_client_logs_in(store, accounts, initial):
    s, io = new_session(store, accounts)
    out = exchange(s, io, ALICE, ALICE_PW, initial=initial)
    assert out.startswith(b"a1 OK [CAPABILITY "), out
    assert b"AUTH=" not in out  # no mechanisms once logged in
    assert s.user == ALICE and io.holds == []
    assert b"a2 OK" in send(s, io, b"a2 SELECT INBOX")


class RawHeader:
    def __init__(self, raw: str) -> None:
        self.raw = raw

    def __str__(self) -> str:
        return self.raw

    def make_cbind_input(self, cb: object) -> bytes:
        return self.raw.encode()


def authzid_exchange(s, io, authzid: str) -> bytes:
    """As Cyrus SASL's client (mbsync) sends it: `n,a=<authzid>,n=<user>,r=...`, `c=` repeating that header."""
    client = ScramClient([MECH], ALICE, ALICE_PW)
    header = f"n,a={authzid},"
    bare = client.get_client_first()[3:]
    client.set_server_first(unb64(send(s, io, b"a1 AUTHENTICATE SCRAM-SHA-256 " + b64(header + bare))))
    client.gs2_header = RawHeader(header)  # scramp's client sends no authzid: `c=` must repeat this header
    final = client.get_client_final()
    assert final.startswith("c=" + base64.b64encode(header.encode()).decode() + ",")
    out = send(s, io, b64(final))
    if not out.startswith(b"+ "):
        return out
    client.set_server_final(unb64(out))
    return send(s, io, b"")


def test_authzid_equal_to_the_user_is_accepted(store, accounts):
    s, io = new_session(store, accounts)
    assert authzid_exchange(s, io, ALICE).startswith(b"a1 OK [CAPABILITY ")
    assert s.user == ALICE


def test_another_authzid_is_refused_and_counted(store, accounts):
    s, io = new_session(store, accounts, verdicts=[FailureVerdict(1.0, False)])
    assert authzid_exchange(s, io, "bob@corp.example") == b""
    assert io.holds == [1.0]
    s.release_hold()
    assert bytes(io.out).startswith(b"a1 NO [AUTHORIZATIONFAILED]") and s.user is None


def test_user_name_is_case_insensitive_as_with_login(store, accounts):
    s, io = new_session(store, accounts)
    assert exchange(s, io, ALICE.upper(), ALICE_PW).startswith(b"a1 OK")
    assert s.user == ALICE


def test_rfc7677_example_exchange(store, monkeypatch):
    """RFC 7677 section 3, octet for octet, with the server's nonce and the salt fixed to the RFC's."""
    monkeypatch.setattr(scram, "new_salt", lambda: base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="))
    monkeypatch.setattr(scram, "new_nonce", lambda: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    s, io = new_session(store, Accounts({"user": "pencil"}))
    out = send(s, io, b"a1 AUTHENTICATE SCRAM-SHA-256 " + b64("n,,n=user,r=rOprNGfwEbeRWgbNEkqO"))
    assert unb64(out) == "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    out = send(s, io, b64("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                          "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
    assert unb64(out) == "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert send(s, io, b"").startswith(b"a1 OK [CAPABILITY ")
    assert s.user == "user"


def test_keys_are_derived_once_per_account_and_password(store, accounts, monkeypatch):
    salts = []

    def counting_salt() -> bytes:
        salts.append(1)
        return b"0123456789abcdef"

    monkeypatch.setattr(scram, "new_salt", counting_salt)
    for _ in range(3):
        s, io = new_session(store, accounts)
        assert exchange(s, io, ALICE, ALICE_PW).startswith(b"a1 OK")
    assert len(salts) == 1
    changed = Accounts({ALICE: "a-new-password"})
    s, io = new_session(store, changed)
    assert exchange(s, io, ALICE, "a-new-password").startswith(b"a1 OK")
    assert len(salts) == 2  # a changed password is derived afresh; the old one no longer logs in
    s, io = new_session(store, changed, verdicts=[FailureVerdict(0.0, False)])
    exchange(s, io, ALICE, ALICE_PW)
    s.release_hold()
    assert b"a1 NO [AUTHENTICATIONFAILED]" in bytes(io.out)


def test_with_an_offload_hook_the_keys_are_derived_outside_the_session(store, accounts):
    """The adapter's thread derives the keys; until it is done the session reads and runs nothing."""
    s, io = new_session(store, accounts, offloading=True)
    client = ScramClient([MECH], ALICE, ALICE_PW)
    assert send(s, io, b"a1 AUTHENTICATE SCRAM-SHA-256 " + b64(client.get_client_first())) == b""
    assert len(io.work) == 1 and not scram.cached(ALICE, ALICE_PW)
    assert s.backlogged and not s.runnable  # held: reads and runs nothing until the thread is done
    io.work[0]()  # what the thread does
    assert scram.cached(ALICE, ALICE_PW)
    s.release_hold()
    out = bytes(io.out)
    io.out.clear()
    client.set_server_first(unb64(out))
    out = send(s, io, b64(client.get_client_final()))
    client.set_server_final(unb64(out))
    out = send(s, io, b"")
    assert out.startswith(b"a1 OK") and s.user == ALICE
    s2, io2 = new_session(store, accounts, offloading=True)
    assert exchange(s2, io2, ALICE, ALICE_PW).startswith(b"a1 OK")
    assert io2.work == []  # cached: nothing to offload


# -- failures count as failed logins -------------------------------------------------------------------------
@pytest.mark.parametrize("user", [ALICE, "nobody@corp.example"], ids=["wrong-password", "unknown-user"])
def test_wrong_proof_is_a_failed_login_held_and_counted(store, accounts, user):
    s, io = new_session(store, accounts, verdicts=[FailureVerdict(2.0, False)])
    assert exchange(s, io, user, "wrong") == b""  # held by the guard's delay, as a wrong LOGIN is
    assert io.holds == [2.0]
    assert send(s, io, b"a2 NOOP") == b""  # nothing behind it runs meanwhile
    s.release_hold()
    out = bytes(io.out)
    assert out.startswith(b"a1 NO [AUTHENTICATIONFAILED] ") and b"a2 OK" in out
    assert s.user is None


def test_third_failure_hangs_up_as_with_login(store, accounts):
    verdicts = [FailureVerdict(1.0, False), FailureVerdict(1.0, False), FailureVerdict(1.0, True)]
    s, io = new_session(store, accounts, verdicts=verdicts)
    for n in range(3):
        assert exchange(s, io, ALICE, "wrong", tag=b"a%d" % n) == b""
        s.release_hold()
        assert bytes(io.out).startswith(b"a%d NO [AUTHENTICATIONFAILED]" % n)
        if n < 2:
            io.out.clear()
    assert io.closed and b"* BYE Too many failed logins" in bytes(io.out)


def test_unknown_user_gets_a_stable_salt_like_a_known_one(store, accounts):
    def salt_of(user: str) -> str:
        s, io = new_session(store, accounts)
        client = ScramClient([MECH], user, "x")
        first = unb64(send(s, io, b"a1 AUTHENTICATE SCRAM-SHA-256 " + b64(client.get_client_first())))
        return dict(part.split("=", 1) for part in first.split(","))["s"]

    assert salt_of("nobody@corp.example") == salt_of("nobody@corp.example") != salt_of("other@corp.example")
    assert salt_of(ALICE) == salt_of(ALICE)


def test_under_penalty_the_proof_is_checked_only_after_the_wait(store, accounts):
    s, io = new_session(store, accounts, verdicts=[FailureVerdict(1.0, False)], penalties=[3.0])
    client = ScramClient([MECH], ALICE, ALICE_PW)
    client.set_server_first(unb64(send(s, io, b"a1 AUTHENTICATE SCRAM-SHA-256 " + b64(client.get_client_first()))))
    assert send(s, io, b64(client.get_client_final())) == b""
    assert io.holds == [3.0] and s.user is None
    s.release_hold()  # the wait is over: checked (right), the server-final goes out
    client.set_server_final(unb64(bytes(io.out)))
    io.out.clear()
    assert send(s, io, b"").startswith(b"a1 OK") and s.user == ALICE


# -- bounds, cancels and malformed messages: answered at once, never counted ---------------------------------
def test_star_cancels_with_bad_at_either_step(store, accounts):
    s, io = new_session(store, accounts)
    send(s, io, b"a1 AUTHENTICATE SCRAM-SHA-256")
    assert send(s, io, b"*") == b"a1 BAD AUTHENTICATE cancelled\r\n"
    client = ScramClient([MECH], ALICE, ALICE_PW)
    send(s, io, b"a2 AUTHENTICATE SCRAM-SHA-256 " + b64(client.get_client_first()))
    assert send(s, io, b"*") == b"a2 BAD AUTHENTICATE cancelled\r\n"
    assert not s.scram_active and io.holds == []
    assert exchange(s, io, ALICE, ALICE_PW, tag=b"a3").startswith(b"a3 OK")


@pytest.mark.parametrize(("first", "answer"), [
    (b"!!notbase64", b"a1 BAD Invalid base64"),
    (b"=", b"a1 NO SCRAM-SHA-256: "),  # an empty client-first
    (b64("p=tls-server-end-point,,n=alice@corp.example,r=abcdef"), b"a1 NO SCRAM-SHA-256: channel-binding-not-supported"),
    (b64("x,,n=alice@corp.example,r=abcdef"), b"a1 NO SCRAM-SHA-256: "),
    (b64("n,,n=alice@corp.example"), b"a1 NO SCRAM-SHA-256: "),
    (b64("n,,m=ext,n=alice@corp.example,r=abcdef"), b"a1 NO SCRAM-SHA-256: "),
    (b64("n,,n=" + "a" * 3000 + ",r=abcdef"), b"a1 NO SCRAM-SHA-256 client-first message longer than 2048"),
    (base64.b64encode(b"n,,n=\xff\xfe,r=abc"), b"a1 NO SCRAM-SHA-256 client-first message is not UTF-8"),
])
def test_malformed_client_first(store, accounts, first, answer):
    s, io = new_session(store, accounts)
    out = send(s, io, b"a1 AUTHENTICATE SCRAM-SHA-256 " + first)
    assert out.startswith(answer), out
    assert out.count(b"\r\n") == 1 and not s.scram_active and io.holds == []
    assert send(s, io, b"a2 LOGIN alice@corp.example alice-password").startswith(b"a2 OK")


@pytest.mark.parametrize("final", [
    "c=biws,r=WRONGNONCE,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "c=eSws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",  # "y,," where "n,," was sent
    "c=biws,r={nonce}",
    "garbage",
])
def test_malformed_client_final_is_no_and_not_counted(store, accounts, final):
    s, io = new_session(store, accounts)
    client = ScramClient([MECH], ALICE, ALICE_PW)
    first = unb64(send(s, io, b"a1 AUTHENTICATE SCRAM-SHA-256 " + b64(client.get_client_first())))
    nonce = first.split(",")[0][2:]
    out = send(s, io, b64(final.format(nonce=nonce)))
    assert out.startswith(b"a1 NO SCRAM-SHA-256: "), out
    assert io.holds == [] and not s.scram_active and s.user is None


def test_answer_after_server_final_must_be_empty(store, accounts):
    s, io = new_session(store, accounts)
    client = ScramClient([MECH], ALICE, ALICE_PW)
    client.set_server_first(unb64(send(s, io, b"a1 AUTHENTICATE SCRAM-SHA-256 " + b64(client.get_client_first()))))
    client.set_server_final(unb64(send(s, io, b64(client.get_client_final()))))
    assert send(s, io, b"Zm9v").startswith(b"a1 NO SCRAM-SHA-256: ")
    assert s.user is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.binary(max_size=300), final=st.binary(max_size=300))
def test_any_bytes_get_a_tagged_answer_never_a_traceback(store, accounts, first, final):
    s, io = new_session(store, accounts, verdicts=[FailureVerdict(0.0, False)] * 2)
    out = send(s, io, b"a1 AUTHENTICATE SCRAM-SHA-256 " + (base64.b64encode(first) or b"="))
    if out.startswith(b"+ "):
        out = send(s, io, base64.b64encode(final))
    assert out.startswith((b"a1 NO ", b"a1 BAD ")), out
    assert b"SERVERBUG" not in out and not s.scram_active


# -- where it is announced -----------------------------------------------------------------------------------
def test_announced_beside_plain_only():
    caps = capabilities(False, False, False, False)
    assert "AUTH=PLAIN" in caps and "AUTH=SCRAM-SHA-256" in caps
    assert not any(c.endswith("-PLUS") for c in caps)
    before_tls = capabilities(False, True, False, True)
    assert "LOGINDISABLED" in before_tls and not any(c.startswith("AUTH=") for c in before_tls)
    assert "AUTH=SCRAM-SHA-256" in capabilities(False, True, True, True)
    assert not any(c.startswith("AUTH=") for c in capabilities(True, True, True, True))


def test_refused_before_starttls_when_login_is_disabled(store, accounts):
    s, io = new_session(store, accounts, tls_available=True, login_disabled_without_tls=True)
    assert send(s, io, b"a1 AUTHENTICATE SCRAM-SHA-256").startswith(b"a1 NO [PRIVACYREQUIRED]")
    assert send(s, io, b"a2 AUTHENTICATE SCRAM-SHA-256-PLUS").startswith(b"a2 NO [CANNOT]")


# -- over a socket ----------------------------------------------------------------------------------------------
async def scram_over(raw: Raw, user: str, password: str, tag: bytes = b"a1") -> list[bytes]:
    client = ScramClient([MECH], user, password)
    await raw.send(tag + b" AUTHENTICATE SCRAM-SHA-256 " + b64(client.get_client_first()) + b"\r\n")
    client.set_server_first(unb64(await raw.line()))
    await raw.send(b64(client.get_client_final()) + b"\r\n")
    line = await raw.line()
    if not line.startswith(b"+ "):
        return [line]
    client.set_server_final(unb64(line))
    await raw.send(b"\r\n")
    return await raw.until_tagged(tag)


async def test_over_a_socket_keys_derived_in_a_thread(store, accounts):
    srv = ImapServer(store, accounts, name="corp.example")
    await srv.start()
    raw = await Raw.connect(srv.host, srv.port)
    try:
        assert (await scram_over(raw, ALICE, ALICE_PW))[-1].startswith(b"a1 OK [CAPABILITY ")
        assert scram.cached(ALICE, ALICE_PW)
        assert (await raw.command(b"a2", b"SELECT INBOX"))[-1].startswith(b"a2 OK")
    finally:
        await raw.close()
        await srv.stop()


async def test_over_a_socket_a_wrong_proof_waits_and_counts(store, accounts):
    guard = ConnectionGuard(GuardLimits(auth_failure_delay=0.2, max_auth_failures=2))
    srv = ImapServer(store, accounts, name="corp.example", guard=guard)
    await srv.start()
    raw = await Raw.connect(srv.host, srv.port)
    try:
        started = time.monotonic()
        answer = await scram_over(raw, ALICE, "wrong")
        assert answer[-1].startswith(b"a1 NO [AUTHENTICATIONFAILED]")
        assert time.monotonic() - started >= 0.2
        assert guard.recent_failures("127.0.0.1") == 1
        assert (await scram_over(raw, ALICE, "wrong", tag=b"a2"))[-1].startswith(b"a2 NO [AUTHENTICATIONFAILED]")
        assert await raw.line() == b"* BYE Too many failed logins\r\n"
        assert await asyncio.wait_for(raw.reader.read(), 5) == b""
        assert guard.recent_failures("127.0.0.1") == 2
    finally:
        await raw.close()
        await srv.stop()
