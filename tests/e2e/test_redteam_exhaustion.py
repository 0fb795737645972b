"""Exhaustion attacks on a running `recall-lab serve`, over plain sockets: what one peer can make the server spend.

Why end to end: each bound is unit-tested where it lives (tests/smtp/test_data_reader.py, test_session_bounds.py,
tests/imap/test_literal_memory.py, test_mailbox_names.py, test_user_sessions.py), but what an attacker meets is
the whole process: its memory (RSS sampled while the attack runs), the event loop every client shares (another
client's NOOP latency) and its log. The bounds are generous; the failures they catch were not (gigabytes,
seconds, hangs).
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable

from .conftest import Served
from .test_hostile_serve import Imap, NoopProbe, Smtp, _login, _ports, rss_kib

MB = 1024 * 1024


class PeakRss:
    """The server's highest RSS while the `with` block runs (sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = rss_kib(pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self._stop.wait(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def grown_mib(self) -> float:
        return (self.peak - self.start) / 1024


def _in_threads(count: int, work: Callable[[int], str]) -> list[str]:
    results = [""] * count

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion on the results
            results[i] = repr(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# --- SMTP ------------------------------------------------------------------------------------------------------

def test_data_of_millions_of_lines_costs_its_size_not_its_line_count(lab: Served) -> None:
    """aiosmtpd kept an object per line: 10 MB of empty lines cost ~500 MB each, before any limit looked."""
    _, _, mx_port = _ports(lab, "corp.example")
    head = b"From: x@evil.example\r\nTo: bob@corp.example\r\nSubject: lines\r\n\r\n"
    under = head + b"\r\n" * ((10_000_000 - len(head)) // 2)  # under the 10 MiB limit: accepted
    over = head + b"x\r\n" * (11_500_000 // 3)  # over it: refused, and nothing of it may be kept

    def send(i: int) -> str:
        smtp = Smtp(mx_port)
        smtp.sock.settimeout(120)
        try:
            return smtp.mail(b"evil.example", b"<x@evil.example>", b"<bob@corp.example>",
                             under if i < 4 else over)[:3]
        finally:
            smtp.close()

    with NoopProbe(lab, "alice@corp.example") as probe, PeakRss(lab.proc.pid) as rss:
        answers = _in_threads(6, send)
    assert answers == ["250"] * 4 + ["552"] * 2, answers
    assert rss.grown_mib < 300, f"six DATA transfers made the server grow {rss.grown_mib:.0f} MiB"
    assert probe.worst < 1.0, f"another client's NOOP waited {probe.worst:.2f} s"


def test_a_pipelined_burst_leaves_the_event_loop_to_others(lab: Served) -> None:
    """aiosmtpd answered every pipelined command in its buffer without letting anyone else run."""
    _, _, mx_port = _ports(lab, "corp.example")
    smtp = Smtp(mx_port)
    smtp.sock.settimeout(60)
    count = 30_000
    try:
        smtp.cmd(b"EHLO burst.example")
        smtp.cmd(b"MAIL FROM:<x@evil.example>")
        with NoopProbe(lab, "alice@corp.example") as probe:
            sender = threading.Thread(target=smtp.sock.sendall, args=(b"RCPT TO:<bob@corp.example>\r\n" * count,))
            sender.start()
            codes = [smtp.reply()[:3] for _ in range(count)]
            sender.join()
    finally:
        smtp.close()
    assert codes.count("250") == 100 and codes.count("452") == count - 100  # at most 100 recipients
    assert probe.worst < 0.5, f"another client's NOOP waited {probe.worst:.2f} s behind a pipelined burst"


def test_an_overlong_auth_response_gets_one_refusal(lab: Served) -> None:
    """aiosmtpd's readline raised (a traceback in the log, a 451) and read the rest of the line as commands."""
    _, submission_port, _ = _ports(lab, "corp.example")
    smtp = Smtp(submission_port)
    try:
        smtp.cmd(b"EHLO long.example")
        assert smtp.cmd(b"AUTH PLAIN").startswith("334")
        answer = smtp.cmd(base64.b64encode(b"\0bob@corp.example\0" + b"x" * 500_000))
        assert answer.startswith("500 5.5.6"), answer
        assert smtp.cmd(b"NOOP").startswith("250"), "one reply per line: the dialogue is still in step"
    finally:
        smtp.close()
    code, err = lab.stop()
    assert code == 0 and "Traceback" not in err, err


def test_junk_from_clients_does_not_fill_the_log(serve) -> None:
    """aiosmtpd logged each bogus command as a WARNING: 8 lines per junk connection, from anyone."""
    served = serve()
    _, _, mx_port = _ports(served, "corp.example")
    for _ in range(100):
        sock = socket.create_connection(("127.0.0.1", mx_port), timeout=10)
        sock.sendall(b"XX\r\n" * 6)
        while sock.recv(65536):  # the server says goodbye after five and closes
            pass
        sock.close()
    code, err = served.stop()
    assert code == 0
    assert len(err.splitlines()) < 10, f"{len(err.splitlines())} log lines for 100 junk connections:\n{err[:500]}"


# --- IMAP ------------------------------------------------------------------------------------------------------

def test_literals_cut_off_by_disconnects_are_freed(lab: Served) -> None:
    """Three rounds of five 20 MB literals, each client gone before the end, left 300 MB behind."""
    imap_port, _, _ = _ports(lab, "corp.example")
    before = rss_kib(lab.proc.pid)
    piece = b"y" * MB
    for _ in range(3):
        clients = []
        for _ in range(5):
            client = Imap(imap_port)
            _login(client, lab, "bob@corp.example")
            client.sock.sendall(b"a APPEND INBOX {31457280}\r\n")
            assert client._line().startswith(b"+")
            clients.append(client)
        for _ in range(20):
            for client in clients:
                client.sock.sendall(piece)
        for client in clients:  # the server has read it all when it answers a second connection's NOOP...
            client.close()
        probe = Imap(imap_port)
        _login(probe, lab, "alice@corp.example")
        probe.cmd("NOOP")
        probe.close()
    deadline = time.monotonic() + 10
    while (grown := (rss_kib(lab.proc.pid) - before) / 1024) >= 100 and time.monotonic() < deadline:
        time.sleep(0.1)  # ...and frees it when it has seen each connection go
    assert grown < 100, f"{grown:.0f} MiB of abandoned literals still held"


def test_mailbox_names_and_list_patterns_cannot_hold_the_server(lab: Served) -> None:
    """CREATE of a 30,000-level name ran for minutes; LIST `*a*a...*b` took exponential time."""
    imap_port, _, _ = _ports(lab, "corp.example")
    client = Imap(imap_port)
    client.sock.settimeout(20)
    try:
        _login(client, lab, "carol@corp.example")
        with NoopProbe(lab, "alice@corp.example") as probe:
            tagged, _ = client.cmd("CREATE " + "/".join(["d"] * 30_000))
            assert b" NO [CANNOT]" in tagged, tagged
            tagged, _ = client.cmd("CREATE " + "a" * 40)
            assert b" OK" in tagged, tagged
            start = time.perf_counter()
            tagged, _ = client.cmd('LIST "" "' + "*a" * 12 + '*b"')
            assert b" OK" in tagged, tagged
            assert time.perf_counter() - start < 2.0
    finally:
        client.close()
    assert probe.worst < 1.0, f"another client's NOOP waited {probe.worst:.2f} s"


def test_one_user_has_a_bounded_number_of_sessions_and_idlers_are_cheap(lab: Served) -> None:
    """1,000 sessions of one user idling on a mailbox: one STORE over 2,000 messages held others 4.3 s."""
    imap_port, _, _ = _ports(lab, "corp.example")
    filler = Imap(imap_port)
    _login(filler, lab, "carol@corp.example")
    messages = [b"Subject: %06d\r\n\r\nhello\r\n" % i for i in range(2000)]
    filler.sock.sendall(b"".join(b"p%d APPEND INBOX {%d+}\r\n%b\r\n" % (i, len(m), m)
                                 for i, m in enumerate(messages)))
    while not (line := filler._line()).startswith(b"p1999 "):
        assert not line.startswith(b"p") or b" OK " in line, line
    sessions = [filler]
    try:
        password = lab.domain("corp.example")["users"]["carol@corp.example"]
        answers = []
        for _ in range(40):
            client = Imap(imap_port)
            tagged, _ = client.cmd(f'LOGIN "carol@corp.example" "{password}"')
            answers.append(tagged.split()[1:3])
            sessions.append(client)
        assert answers.count([b"OK", b"[CAPABILITY"]) == 31, answers  # 32 with the filler
        assert [b"NO", b"[LIMIT]"] in answers, answers
        idlers = [s for s, a in zip(sessions[1:], answers, strict=True) if a[0] == b"OK"][:30]
        for idler in idlers:
            idler.cmd("SELECT INBOX")
            idler.sock.sendall(b"i IDLE\r\n")
            assert idler._line().startswith(b"+")
        filler.cmd("SELECT INBOX")
        with NoopProbe(lab, "alice@corp.example") as probe:
            tagged, _ = filler.cmd("STORE 1:* +FLAGS (\\Flagged)")
            assert b" OK" in tagged
            for idler in idlers:
                idler.sock.settimeout(30)
                seen = 0
                while seen < 2000:
                    if b" FETCH " in idler._line():
                        seen += 1
        assert probe.worst < 0.5, f"another client's NOOP waited {probe.worst:.2f} s"
    finally:
        for client in sessions:
            client.close()
