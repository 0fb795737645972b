"""Hostile bytes against a running `recall-lab serve`, over plain sockets, as an attacker would send them.

Why one file, end to end: each defence is unit-tested where it lives, but what an attacker meets is the
program as a whole (SMTP edge, delivery, store, IMAP, the clients that read the mail). Every test here asserts the
three promises: nothing is deleted that only the sender may delete, nothing is spoofed, and no one client makes
the server slow or fat for everybody else (RSS of the server process and another client's NOOP latency are
measured inside the test; the bounds are generous, the failures they catch are not).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path

import pytest

from recall_lab.fake_servers.domain import Endpoint
from recall_lab.fake_servers.recall import format as recall_format
from recall_lab.harness.clients.desktop import DesktopClient

from .conftest import Served, fetch_all, message_ids
from .test_journey_clients import LEGACY_LAB
from .test_journey_cloud import send

# --- a plain-socket SMTP and IMAP client, as outside tools speak ---------------------------------------------

class Smtp:
    """One SMTP dialogue over a plain socket: exact bytes out, replies in."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0))
        self.buf = b""
        self.greeting = self.reply()

    def reply(self) -> str:
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return "\n".join(lines)

    def cmd(self, line: bytes) -> str:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def mail(self, helo: bytes, mail_from: bytes, rcpt: bytes, data: bytes) -> str:
        """A whole transaction; returns the first refusal or the final reply."""
        for line in (b"EHLO " + helo, b"MAIL FROM:" + mail_from, b"RCPT TO:" + rcpt, b"DATA"):
            answer = self.cmd(line)
            if answer[:1] not in "23":
                return answer
        self.sock.sendall(data if data.endswith(b"\r\n.\r\n") else data + b"\r\n.\r\n")
        return self.reply()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"QUIT\r\n")
        self.sock.close()


class Imap:
    """One IMAP session over a plain socket, tagged commands in order."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
        self.buf = b""
        self.n = 0
        self.greeting = self._line()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def cmd(self, text: str) -> tuple[bytes, list[bytes]]:
        """(tagged line, untagged lines); literals are skipped by length."""
        self.n += 1
        tag = f"h{self.n}".encode()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        untagged = []
        while True:
            line = self._line()
            while line.endswith(b"}") and b"{" in line:
                size = int(line[line.rfind(b"{") + 1:-1].rstrip(b"+"))
                while len(self.buf) < size:
                    chunk = self.sock.recv(1 << 20)
                    if not chunk:
                        raise ConnectionError("server closed the connection")
                    self.buf += chunk
                self.buf = self.buf[size:]
                line = self._line()
            if line.startswith(tag + b" "):
                return line, untagged
            untagged.append(line)

    def close(self) -> None:
        self.sock.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class NoopProbe:
    """Another, innocent client: a logged-in IMAP session sending NOOP in a loop; keeps the worst latency."""

    def __init__(self, served: Served, user: str) -> None:
        info = served.domain(user.split("@", 1)[1])
        self.client = Imap(info["imap"]["port"])
        tagged, _ = self.client.cmd(f'LOGIN "{user}" "{info["users"][user]}"')
        assert b" OK" in tagged, tagged
        self.worst = 0.0
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            tagged, _ = self.client.cmd("NOOP")
            assert b" OK" in tagged
            self.worst = max(self.worst, time.perf_counter() - start)
            self.count += 1
            self._stop.wait(0.01)

    def __enter__(self) -> NoopProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.client.close()


@pytest.fixture
def legacy(serve, tmp_path: Path) -> Served:
    config = tmp_path / "legacy.toml"
    config.write_text(LEGACY_LAB)
    return serve("--config", str(config))


def _ports(served: Served, domain: str) -> tuple[int, int, int]:
    info = served.domain(domain)
    return info["imap"]["port"], info["submission"]["port"], info["mx"]["port"]


# --- 1. forged recalls: the server's mark of trust cannot be smuggled in -------------------------------------

def _forgeries(original: str) -> dict[str, tuple[bytes, bytes, bytes]]:
    """(EHLO argument, MAIL FROM argument, DATA) of each way a forged mark was (or could be) slipped in."""
    mark = (b"X-Recall-Verified: corp.example", b"X-Recall-Message-ID: " + original.encode(),
            b"X-Recall-Action: delete")
    head = b"From: alice@corp.example\r\nTo: bob@corp.example\r\nSubject: Recall: Q3\r\n"
    body = b"\r\n\r\nalice would like to recall the message\r\n"
    plain = head + b"Message-ID: <f@evil.example>\r\n" + b"\r\n".join(mark) + body
    return {
        "bare-cr": (b"evil.example", b"<x@evil.example>",
                    head + b"Message-ID: <f@evil.example>\r" + b"\r".join(mark) + body),
        "bare-lf": (b"evil.example", b"<x@evil.example>",
                    head + b"Message-ID: <f@evil.example>\n" + b"\n".join(mark) + body),
        "cr-in-ehlo": (b"evil.example\r" + mark[0], b"<x@evil.example>",
                       plain.replace(b"X-Recall-Verified: corp.example\r\n", b"")),
        "cr-in-mail-from": (b"evil.example", b'<"x\r' + mark[0] + b'"@evil.example>',
                            plain.replace(b"X-Recall-Verified: corp.example\r\n", b"")),
        "folded-mark": (b"evil.example", b"<x@evil.example>",
                        plain.replace(b"X-Recall-Verified: corp.example", b"X-Recall-Verified:\r\n corp.example")),
        "space-before-colon": (b"evil.example", b"<x@evil.example>",
                               plain.replace(b"X-Recall-Verified:", b"X-Recall-Verified :")),
    }


@pytest.mark.parametrize("variant", list(_forgeries("<o@x>")))
def test_forged_recall_through_mx_deletes_nothing_in_legacy_mode(legacy: Served, variant: str) -> None:
    mid = send(legacy, "alice@corp.example", "--to", "bob@corp.example", "--subject", "Q3", "--body", "figures")
    imap_port, submission_port, mx_port = _ports(legacy, "corp.example")
    helo, mail_from, data = _forgeries(mid)[variant]
    smtp = Smtp(mx_port)
    try:
        answer = smtp.mail(helo, mail_from, b"<bob@corp.example>", data)
    finally:
        smtp.close()
    # Refused (5xx) or accepted: either is fine. What must never happen is a deletion.
    assert answer[:1] in "25", answer

    async def bob_reads_his_mail() -> DesktopClient:
        client = DesktopClient("bob@corp.example", legacy.domain("corp.example")["users"]["bob@corp.example"],
                               Endpoint("127.0.0.1", imap_port),
                               submission=Endpoint("127.0.0.1", submission_port),
                               process_recalls_on_arrival=True)
        async with client:
            await client.settle()
        return client

    client = asyncio.run(bob_reads_his_mail())
    acted = [e for e in client.events if e.kind == "recall"]
    assert not acted, f"{variant}: bob's client obeyed a forged recall: {acted}"
    if answer.startswith("2"):  # it arrived: the client saw a recall and found it unvouched for
        assert [e for e in client.events if e.kind == "recall-unverified"], client.events
    bob = legacy.imap("bob@corp.example")
    try:
        assert mid in message_ids(bob), f"{variant}: the forged recall deleted alice's original"
        for raw in fetch_all(bob):
            parsed = message_from_bytes(raw, policy=email_policy.default)
            assert parsed["X-Recall-Verified"] is None, f"{variant}: a forged mark reached bob: {raw[:400]!r}"
            assert recall_format.verified_by(raw) is None
            assert b"\r" not in raw.replace(b"\r\n", b""), f"{variant}: a bare CR was stored"
            assert b"\n" not in raw.replace(b"\r\n", b""), f"{variant}: a bare LF was stored"
    finally:
        bob.logout()
    alice = legacy.imap("alice@corp.example")
    try:
        subjects = [message_from_bytes(r, policy=email_policy.default)["Subject"] for r in fetch_all(alice)]
        assert not any(str(s).startswith("Recall Success") for s in subjects), subjects
    finally:
        alice.logout()


# --- 2. From spoofing on submission ------------------------------------------------------------------------

SPOOFED_FROM = [
    b"alice@corp.example <bob@corp.example>",
    b"<alice@corp.example <bob@corp.example>",
    b"alice@corp.example\\ <bob@corp.example>",
    b'"bob" <alice@corp.example> (<bob@corp.example>)',
    b"alice@corp.example, <bob@corp.example>",
    b"=?utf-8?q?alice=40corp=2Eexample?= <bob@corp.example>",
]


@pytest.mark.parametrize("value", SPOOFED_FROM)
def test_submission_refuses_or_delivers_exactly_the_sender(lab: Served, value: bytes) -> None:
    _, submission_port, _ = _ports(lab, "corp.example")
    smtp = Smtp(submission_port)
    try:
        smtp.cmd(b"EHLO client.example")
        token = base64.b64encode(b"\0bob@corp.example\0" + lab.domain("corp.example")["users"]
                                 ["bob@corp.example"].encode())
        assert smtp.cmd(b"AUTH PLAIN " + token).startswith("235")
        data = (b"From: " + value + b"\r\nTo: carol@corp.example\r\nSubject: spoof\r\n"
                b"Message-ID: <spoof@corp.example>\r\n\r\nhello\r\n")
        answer = smtp.mail(b"client.example", b"<bob@corp.example>", b"<carol@corp.example>", data)
    finally:
        smtp.close()
    carol = lab.imap("carol@corp.example")
    try:
        delivered = fetch_all(carol)
    finally:
        carol.logout()
    if answer.startswith("5"):
        assert answer.startswith("553 5.7.1"), answer
        assert not delivered
        return
    assert answer.startswith("250"), answer
    (raw,) = delivered
    parsed = message_from_bytes(raw, policy=email_policy.default)
    addresses = [a.addr_spec.lower() for a in parsed["From"].addresses]
    assert addresses == ["bob@corp.example"], (value, addresses)


# --- 3. a MIME bomb through MX does not stall or bloat the server --------------------------------------------

def _mime_bomb(parts: int) -> bytes:
    head = (b"From: x@evil.example\r\nTo: bob@corp.example\r\nSubject: bomb\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n")
    return head + b"--b\r\n\r\n" * parts + b"--b--\r\n"


def test_mime_bomb_through_mx_neither_stalls_nor_bloats(lab: Served) -> None:
    imap_port, _, mx_port = _ports(lab, "corp.example")
    bomb = _mime_bomb(1_000_000)  # 7 MB of empty parts
    before = rss_kib(lab.proc.pid)
    with NoopProbe(lab, "alice@corp.example") as probe:
        smtp = Smtp(mx_port)
        try:
            answer = smtp.mail(b"evil.example", b"<x@evil.example>", b"<bob@corp.example>", bomb)
        finally:
            smtp.close()
        assert answer[:1] in "25", answer
        bob = Imap(imap_port)
        try:
            password = lab.domain("corp.example")["users"]["bob@corp.example"]
            assert b" OK" in bob.cmd(f'LOGIN "bob@corp.example" "{password}"')[0]
            tagged, _ = bob.cmd("SELECT INBOX")
            assert b" OK" in tagged
            for items in ("BODYSTRUCTURE", "BODY.PEEK[1.2]", "ENVELOPE", "BODY.PEEK[999999]", "BODY.PEEK[]"):
                tagged, _ = bob.cmd(f"FETCH 1:* ({items})")
                assert tagged.split()[1] in (b"OK", b"NO"), tagged
        finally:
            bob.close()
    grown_mib = (rss_kib(lab.proc.pid) - before) / 1024
    assert probe.count > 0
    assert probe.worst < 1.0, f"another client's NOOP waited {probe.worst:.2f} s"
    assert grown_mib < 300, f"the server kept {grown_mib:.0f} MiB after the bomb"


@contextlib.contextmanager
def _sockets(count: int, port: int, source: str) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            opened.append(socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)))
        yield opened
    finally:
        for s in opened:
            s.close()


# --- 4. a client that pipelines big FETCHes and never reads ------------------------------------------------

def _login(client: Imap, served: Served, user: str) -> None:
    password = served.domain(user.split("@", 1)[1])["users"][user]
    tagged, _ = client.cmd(f'LOGIN "{user}" "{password}"')
    assert b" OK" in tagged, tagged


def test_a_client_that_never_reads_cannot_bloat_or_stall_the_server(lab: Served) -> None:
    imap_port, _, _ = _ports(lab, "corp.example")
    filler = Imap(imap_port)
    try:
        _login(filler, lab, "bob@corp.example")
        body = (b"x" * 998 + b"\r\n") * 1000  # 1 MB
        for i in range(30):
            message = b"From: a@b.example\r\nSubject: big %d\r\n\r\n" % i + body
            filler.sock.sendall(b"a%d APPEND INBOX {%d+}\r\n" % (i, len(message)) + message + b"\r\n")
            while not filler._line().startswith(b"a%d " % i):
                pass
    finally:
        filler.close()
    before = rss_kib(lab.proc.pid)
    with NoopProbe(lab, "alice@corp.example") as probe:
        hog = Imap(imap_port)
        _login(hog, lab, "bob@corp.example")
        hog.cmd("SELECT INBOX")
        hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.sock.sendall(b"".join(b"f%d FETCH 1:* (BODY.PEEK[])\r\n" % i for i in range(20)))
        deadline = time.monotonic() + 3
        peak = before
        while time.monotonic() < deadline:  # the server has had time to build whatever it is going to build
            peak = max(peak, rss_kib(lab.proc.pid))
            time.sleep(0.05)
        hog.close()
        start = time.perf_counter()
        fresh = Imap(imap_port)  # the server answers a new client at once after the hog left
        _login(fresh, lab, "carol@corp.example")
        fresh.close()
        after_leave = time.perf_counter() - start
    grown_mib = (peak - before) / 1024
    assert grown_mib < 200, f"a client that never reads made the server grow {grown_mib:.0f} MiB"
    assert probe.worst < 1.0, f"another client's NOOP waited {probe.worst:.2f} s"
    assert after_leave < 1.0, f"after the hog left, a login took {after_leave:.2f} s"


# --- 5. password guessing is slowed down, the rightful user is not locked out --------------------------------

def test_wrong_passwords_are_throttled_and_the_right_one_still_works(lab: Served) -> None:
    imap_port, submission_port, _ = _ports(lab, "corp.example")
    guesser = Imap(imap_port)
    tries = 0
    deadline = time.monotonic() + 3
    try:
        while time.monotonic() < deadline:
            tagged, _ = guesser.cmd('LOGIN "bob@corp.example" "guess"')
            assert b" NO " in tagged, tagged
            tries += 1
    except ConnectionError:
        pass  # disconnected after too many failures: also a throttle
    finally:
        guesser.close()
    assert tries <= 5, f"{tries} wrong IMAP logins in 3 s on one connection"

    smtp = Smtp(submission_port)
    smtp_tries = 0
    deadline = time.monotonic() + 3
    try:
        smtp.cmd(b"EHLO guesser.example")
        while time.monotonic() < deadline:
            token = base64.b64encode(b"\0bob@corp.example\0guess")
            answer = smtp.cmd(b"AUTH PLAIN " + token)
            if answer.startswith("421"):
                break
            assert answer.startswith("535"), answer
            smtp_tries += 1
    except ConnectionError:
        pass
    finally:
        smtp.sock.close()
    assert smtp_tries <= 5, f"{smtp_tries} wrong SMTP AUTHs in 3 s on one connection"

    start = time.perf_counter()
    rightful = Imap(imap_port)
    _login(rightful, lab, "bob@corp.example")
    rightful.close()
    smtp = Smtp(submission_port)
    try:
        smtp.cmd(b"EHLO bob.example")
        password = lab.domain("corp.example")["users"]["bob@corp.example"].encode()
        assert smtp.cmd(b"AUTH PLAIN " + base64.b64encode(b"\0bob@corp.example\0" + password)).startswith("235")
    finally:
        smtp.close()
    assert time.perf_counter() - start < 1.0, "the rightful user waited for the guesser's penalty"


# --- 6. connection floods and slow talkers --------------------------------------------------------------------

def _greeting(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    return data


def test_a_connection_flood_is_refused_politely_and_others_still_get_in(serve) -> None:
    served = serve("--max-connections", "60", "--max-connections-per-ip", "20")
    imap_port, submission_port, mx_port = _ports(served, "corp.example")
    with _sockets(20, imap_port, "127.0.0.2") as flood:
        for s in flood:
            assert _greeting(s).startswith(b"* OK"), "under the cap every connection is greeted"
        with _sockets(5, imap_port, "127.0.0.2") as extra:
            for s in extra:
                assert _greeting(s).startswith(b"* BYE"), "over the per-address cap: a polite BYE"
        with _sockets(3, mx_port, "127.0.0.2") as extra_smtp:
            for s in extra_smtp:
                assert _greeting(s).startswith(b"421 4.7.0"), "the cap counts every listener"
        with _sockets(20, submission_port, "127.0.0.3") as more, _sockets(20, mx_port, "127.0.0.4") as most:
            assert all(_greeting(s).startswith(b"220") for s in more + most)
            with _sockets(1, imap_port, "127.0.0.5") as over_total:
                assert _greeting(over_total[0]).startswith(b"* BYE"), "over the total cap: a polite BYE"
        start = time.perf_counter()
        rightful = Imap(imap_port)  # another address, under both caps: in at once
        _login(rightful, served, "bob@corp.example")
        rightful.close()
        assert time.perf_counter() - start < 1.0
    code, err = served.stop()
    assert code == 0 and "Traceback" not in err, err
    refusing = [line for line in err.splitlines() if "refusing" in line.lower()]
    assert 1 <= len(refusing) <= 3, f"one log line per episode, got {len(refusing)}:\n{err}"


def test_a_slow_client_cannot_hold_a_connection_before_login(serve) -> None:
    served = serve("--login-timeout", "1")
    imap_port, submission_port, _ = _ports(served, "corp.example")
    for port, command in ((imap_port, b"a LOGIN bob@corp.example x"), (submission_port, b"EHLO slow.example")):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            _greeting(sock)
            start = time.monotonic()
            closed = False
            for byte in command * 20:  # a byte every 0.1 s: each one would reset an idle timer
                try:
                    sock.sendall(bytes([byte]))
                    sock.settimeout(0.1)
                    if sock.recv(4096) == b"":
                        closed = True
                        break
                except TimeoutError:
                    continue
                except (ConnectionError, OSError):
                    closed = True
                    break
                if time.monotonic() - start > 5:
                    break
            # The server said goodbye (and closed) at its budget, not at the client's pace.
            assert closed or time.monotonic() - start < 5, f"port {port}: a dribbling client was never cut off"
            assert time.monotonic() - start < 4, f"port {port}: cut off only after {time.monotonic() - start:.1f} s"
        finally:
            sock.close()


def test_an_mx_session_that_delivers_nothing_cannot_keep_its_slot(serve) -> None:
    """MX has no login: an accepted MAIL must not end the time budget, or a command now and then would hold
    a connection slot forever."""
    served = serve("--login-timeout", "1")
    _, _, mx_port = _ports(served, "corp.example")
    smtp = Smtp(mx_port)
    try:
        assert smtp.cmd(b"EHLO slow.example").startswith("250")
        assert smtp.cmd(b"MAIL FROM:<x@evil.example>").startswith("250")
        start = time.monotonic()
        with pytest.raises(ConnectionError):
            while time.monotonic() - start < 5:
                answer = smtp.cmd(b"NOOP")  # one command every 0.2 s: each would reset a per-command timer
                if answer.startswith("421"):
                    assert "4.4.2" in answer, answer
                    smtp.reply()  # the server closes after its goodbye
                time.sleep(0.2)
        assert time.monotonic() - start < 4, "the MX session outlived its budget"
    finally:
        smtp.sock.close()
