#!/usr/bin/env python3
"""Benchmark our IMAP server against Dovecot, side by side in one run, with the same client (imaplib).

Why side by side: absolute timings depend on the machine; the ratio ours/Dovecot on the same mailbox, the
same client and the same moment does not (much). Both servers run in their own processes (ours in a child
Python process, so the client does not share its GIL), both hold one INBOX of N generated messages of
realistic sizes with unique Message-IDs (Dovecot's is written as a Maildir directly, then indexed by one
untimed SELECT).

Measured:
  fetch_flags_uid    FETCH 1:* (FLAGS UID)                       median of --repeat runs
  fetch_headers      FETCH 1:* BODY.PEEK[HEADER]                 median of --repeat runs
  search_message_id  UID SEARCH HEADER Message-ID <id>            median of --searches ids (after a warm-up)
  search_text        UID SEARCH TEXT quarterly (a common word)    median of --repeat runs
  sort_subject       UID SORT (SUBJECT) UTF-8 ALL                median of --repeat runs
  thread_references  UID THREAD REFERENCES UTF-8 ALL             median of --repeat runs
  idle_flags         IDLE push latency of STORE +FLAGS from another connection: median and p99
  idle_expunge       IDLE push latency of STORE \\Deleted + EXPUNGE from another connection: median and p99
  push_flags         push latency as outside clients see it: two plain sockets (no TCP_NODELAY on the client
                     side, as imaplib and most clients), the idler enters IDLE afresh for every event (as clients
                     that re-IDLE do), the other session STOREs a flag; p50 and p90. Goal: p50 < 1 ms. This is
                     the figure Nagle's algorithm on the server's socket spoils (~40 ms, the delayed ACK).

    python scripts/bench_imap.py --messages 10000 [--json out.json]
    python scripts/bench_imap.py --push-only            # push latency only, ours and Dovecot (about 20 s)

Dovecot is started by recall_lab.harness.dovecot.DovecotServer (as root or not); without the `dovecot` binary only our
server is measured and the ratios are omitted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import imaplib
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

USER = "alice@corp.example"
PASSWORD = "alice-password"

# --- the mailbox ---------------------------------------------------------------------------------------

_WORDS = ("recall meeting budget quarterly report please review attached draft final numbers team update "
          "schedule customer invoice project deadline thanks regards tomorrow agenda notes follow up "
          "question answer change request approval release server migration weekend").split()


def _para(rng: random.Random, size: int) -> str:
    out: list[str] = []
    line: list[str] = []
    n = 0
    while n < size:
        w = rng.choice(_WORDS)
        line.append(w)
        n += len(w) + 1
        if sum(len(x) + 1 for x in line) > 66:
            out.append(" ".join(line))
            line = []
    out.append(" ".join(line))
    return "\r\n".join(out)


def _b64(rng: random.Random, size: int) -> str:
    import base64

    data = rng.randbytes(size)
    text = base64.b64encode(data).decode()
    return "\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))


def make_messages(n: int, seed: int = 1) -> list[bytes]:
    """n messages: 70 % plain text (0.5-6 KB), 25 % multipart/alternative (3-20 KB), 5 % with a PDF
    attachment (20-120 KB). Deterministic for a seed, so both processes build the same mailbox."""
    rng = random.Random(seed)
    people = ["alice@corp.example", "bob@corp.example", "carol@corp.example", "dave@mail.example",
              "erin@mail.example"]
    out: list[bytes] = []
    for i in range(n):
        kind = rng.random()
        sender = rng.choice(people)
        head = (f"Return-Path: <{sender}>\r\n"
                f"Received: from mx.corp.example (mx.corp.example [192.0.2.{i % 250}])\r\n"
                f"\tby imap.corp.example with ESMTPS id {rng.getrandbits(48):012x}\r\n"
                f"\tfor <alice@corp.example>; Tue, 24 Nov 2026 09:{i % 60:02d}:00 +0100\r\n"
                f"Date: Tue, 24 Nov 2026 {i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d} +0100\r\n"
                f"From: {sender.split('@')[0].title()} <{sender}>\r\n"
                f"To: Alice <alice@corp.example>\r\n"
                f"Subject: {rng.choice(_WORDS).title()} {rng.choice(_WORDS)} #{i}\r\n"
                f"Message-ID: <{i:06d}.{rng.getrandbits(40):010x}@corp.example>\r\n"
                f"MIME-Version: 1.0\r\n")
        if kind < 0.70:
            body = _para(rng, rng.randint(500, 6000)) + "\r\n"
            msg = head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body
        elif kind < 0.95:
            size = rng.randint(1500, 10000)
            text = _para(rng, size)
            b = f"alt-{i}-{rng.getrandbits(32):08x}"
            msg = (head + f'Content-Type: multipart/alternative; boundary="{b}"\r\n\r\n'
                   f"--{b}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
                   f"--{b}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>{text}</p>"
                   f"</body></html>\r\n--{b}--\r\n")
        else:
            b = f"mix-{i}-{rng.getrandbits(32):08x}"
            msg = (head + f'Content-Type: multipart/mixed; boundary="{b}"\r\n\r\n'
                   f"--{b}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{_para(rng, 800)}\r\n"
                   f"--{b}\r\nContent-Type: application/pdf; name=\"report-{i}.pdf\"\r\n"
                   f"Content-Disposition: attachment; filename=\"report-{i}.pdf\"\r\n"
                   f"Content-Transfer-Encoding: base64\r\n\r\n{_b64(rng, rng.randint(15000, 90000))}\r\n"
                   f"--{b}--\r\n")
        out.append(msg.encode("utf-8"))
    return out


def message_id(raw: bytes) -> str:
    m = re.search(rb"\r\nMessage-ID: (<[^>]+>)", raw)
    assert m
    return m.group(1).decode()


# --- our server, in a child process --------------------------------------------------------------------


def serve_ours(n: int, seed: int) -> None:
    """Child process: load the mailbox into a MemoryStore, serve it, print PORT, run until stdin closes."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from recall_lab.fake_servers.accounts import Accounts
    from recall_lab.fake_servers.imap.server import ImapServer
    from recall_lab.fake_servers.store.memory import MemoryStore

    store = MemoryStore()
    store.ensure_user(USER)
    for raw in make_messages(n, seed):
        store.append(USER, "INBOX", raw)

    async def main() -> None:
        srv = ImapServer(store, Accounts({USER: PASSWORD}), host="127.0.0.1", port=0)
        await srv.start()
        print(f"PORT {srv.port}", flush=True)
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        loop.add_reader(sys.stdin.fileno(), done.set)  # parent closes our stdin to stop us
        await done.wait()
        await srv.stop()

    asyncio.run(main())


class OursProcess:
    def __init__(self, n: int, seed: int) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), "--serve", "--messages", str(n), "--seed", str(seed)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"our server did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --- Dovecot (recall_lab.harness.dovecot.DovecotServer) serving the same mailbox ------------------------------------


class DovecotProcess:
    """A private Dovecot whose INBOX is `messages`, written as a Maildir directly (no APPEND to wait for)."""

    def __init__(self, messages: list[bytes]) -> None:
        from recall_lab.harness.dovecot import DovecotServer, reachable_temp_dir

        self._stack = contextlib.ExitStack()
        try:
            mail = self._stack.enter_context(reachable_temp_dir("recall-lab-bench-mail-"))
            conf = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="recall-lab-bench-dovecot-")))
            maildir = mail / USER
            for sub in ("cur", "new", "tmp"):
                (maildir / sub).mkdir(parents=True)
            base = int(time.time()) - len(messages)
            for i, raw in enumerate(messages):
                # Maildir: one file per message, ascending names = ascending UIDs on first scan
                name = f"{base + i}.M{i:06d}P1.bench,S={len(raw)}:2,"
                (maildir / "cur" / name).write_bytes(raw)
            self.server = self._stack.enter_context(DovecotServer(conf, {USER: PASSWORD}, mail))
        except BaseException:
            self._stack.close()
            raise
        self.port = self.server.port

    def stop(self) -> None:
        self._stack.close()


# --- measurements --------------------------------------------------------------------------------------


def connect(port: int) -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", port)
    c.login(USER, PASSWORD)
    typ, data = c.select("INBOX")
    assert typ == "OK", data
    return c


def timed(fn, repeat: int) -> list[float]:  # noqa: ANN001
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def measure_fetch(c: imaplib.IMAP4, items: str, repeat: int, expect: int) -> list[float]:
    def run() -> None:
        typ, data = c.fetch("1:*", items)
        assert typ == "OK", data
        # imaplib: one tuple per response with a literal, else one bytes item like b"7 (UID 7 FLAGS ())"
        count = sum(1 for d in data if isinstance(d, tuple) or (isinstance(d, bytes) and d[:1].isdigit()))
        assert count >= expect, (count, expect)
    run()  # warm-up (Dovecot builds its cache here, we fill the view cache)
    return timed(run, repeat)


def measure_raw_fetch(port: int, items: bytes, repeat: int) -> list[float]:
    """The same FETCH 1:* on a raw socket: bytes in until the tagged OK, no client-side parsing.
    Informational: shows the servers' own speed without imaplib's parsing cost (same for both)."""
    r = RawActor(port)
    sock = r.idler.sock
    out = []
    try:
        for k in range(repeat + 1):
            tag = b"zq%d" % k
            t = time.perf_counter()
            sock.sendall(tag + b" FETCH 1:* " + items + b"\r\n")
            buf = bytearray()
            end = b"\r\n" + tag + b" OK"
            while end not in buf[-4096:]:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                buf += chunk
            if k:  # the first run is a warm-up
                out.append(time.perf_counter() - t)
            r.idler.buf = bytes(buf[buf.rindex(end) + len(end):])
            while not r.idler.buf.endswith(b"\r\n"):
                r.idler.buf += sock.recv(4096)
            r.idler.buf = b""
    finally:
        r.close()
    return out


def measure_uid_command(c: imaplib.IMAP4, command: tuple[str, ...], repeat: int) -> list[float]:
    """Seconds for each of `repeat` runs of one UID command over the whole mailbox (after one untimed run)."""
    def run() -> None:
        typ, data = c.uid(*command)
        assert typ == "OK", (command, data)

    run()
    return timed(run, repeat)


def measure_search(c: imaplib.IMAP4, ids: list[str], expect_uids: dict[str, bytes] | None) -> list[float]:
    def one(mid: str) -> bytes:
        typ, data = c.uid("SEARCH", "HEADER", "Message-ID", f'"{mid}"')
        assert typ == "OK", data
        return data[0]
    one(ids[0])  # warm-up: Dovecot adds the header to its cache on first use
    out = []
    for mid in ids:
        t = time.perf_counter()
        got = one(mid)
        out.append(time.perf_counter() - t)
        if expect_uids is None:
            assert len(got.split()) == 1, (mid, got)
        else:
            assert got.split() == [expect_uids[mid]], (mid, got)
    return out


class RawIdler:
    """An IDLE client on a raw socket (imaplib in 3.11 has no IDLE): reads pushed lines as they arrive."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.readline()
        self.command(b"a LOGIN \"%s\" \"%s\"" % (USER.encode(), PASSWORD.encode()), b"a ")
        self.command(b"b SELECT INBOX", b"b ")
        self.sock.sendall(b"c IDLE\r\n")
        while not self.readline().startswith(b"+"):
            pass

    def readline(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the IDLE connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def command(self, line: bytes, tag: bytes) -> None:
        self.sock.sendall(line + b"\r\n")
        while True:
            got = self.readline()
            if got.startswith(tag):
                assert b" OK" in got, got
                return

    def wait_for(self, pattern: re.Pattern[bytes]) -> None:
        while not pattern.search(self.readline()):
            pass

    def close(self) -> None:
        try:
            self.sock.sendall(b"DONE\r\nz LOGOUT\r\n")
        finally:
            self.sock.close()


class RawActor:
    """The other connection: sends a command and reads its tagged reply later (so the send time is exact)."""

    def __init__(self, port: int) -> None:
        self.idler = RawIdler.__new__(RawIdler)
        self.idler.sock = socket.create_connection(("127.0.0.1", port))
        self.idler.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.idler.buf = b""
        self.idler.readline()
        self.idler.command(b"a LOGIN \"%s\" \"%s\"" % (USER.encode(), PASSWORD.encode()), b"a ")
        self.idler.command(b"b SELECT INBOX", b"b ")
        self.n = 0

    def send(self, command: bytes) -> bytes:
        self.n += 1
        tag = b"x%d " % self.n
        self.idler.sock.sendall(tag + command + b"\r\n")
        return tag

    def finish(self, tag: bytes) -> None:
        while not self.idler.readline().startswith(tag):
            pass

    def close(self) -> None:
        self.idler.sock.sendall(b"z LOGOUT\r\n")
        self.idler.sock.close()


_FETCH = re.compile(rb"^\* \d+ FETCH")
_EXPUNGE = re.compile(rb"^\* \d+ EXPUNGE")


def measure_idle(port: int, events: int) -> tuple[list[float], list[float]]:
    """-> (flag-change latencies, expunge latencies) seen by an idling second connection."""
    idler = RawIdler(port)
    actor = RawActor(port)
    flags: list[float] = []
    expunges: list[float] = []
    try:
        for k in range(events):
            seq = 1 + ((k // 2) * 37) % 500  # set, then clear, the flag of the same message
            op = b"+FLAGS" if k % 2 == 0 else b"-FLAGS"
            t = time.perf_counter()
            tag = actor.send(b"STORE %d %s (\\Flagged)" % (seq, op))
            idler.wait_for(_FETCH)
            flags.append(time.perf_counter() - t)
            actor.finish(tag)
        for k in range(events):
            seq = 1 + (k * 13) % 400
            tag = actor.send(b"STORE %d +FLAGS.SILENT (\\Deleted)" % seq)
            actor.finish(tag)
            idler.wait_for(_FETCH)  # the \Deleted flag change is pushed first
            t = time.perf_counter()
            tag = actor.send(b"EXPUNGE")
            idler.wait_for(_EXPUNGE)
            expunges.append(time.perf_counter() - t)
            actor.finish(tag)
    finally:
        idler.close()
        actor.close()
    return flags, expunges


class PlainSession:
    """One IMAP session on a plain socket, as an outside client opens it: no TCP_NODELAY, no library."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""
        self.n = 0
        self.readline()
        self.finish(self.send(b'LOGIN "%s" "%s"' % (USER.encode(), PASSWORD.encode())))
        self.finish(self.send(b"SELECT INBOX"))

    def readline(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def send(self, command: bytes) -> bytes:
        self.n += 1
        tag = b"p%d " % self.n
        self.sock.sendall(tag + command + b"\r\n")
        return tag

    def finish(self, tag: bytes) -> None:
        while True:
            line = self.readline()
            if line.startswith(tag):
                assert line[len(tag):].startswith(b"OK"), line
                return

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"z LOGOUT\r\n")
        self.sock.close()


def measure_push(port: int, events: int) -> list[float]:
    """Seconds from the STORE leaving one session to its FETCH push arriving at the other, idling, session.

    The idler enters IDLE afresh for each event and leaves it with DONE, as a client that re-IDLEs does: its
    socket then carries request/response traffic, the receiver delays its ACKs, and a server that leaves
    Nagle's algorithm on holds the push until that ACK comes.
    """
    idler = PlainSession(port)
    actor = PlainSession(port)
    out: list[float] = []
    try:
        for k in range(events):
            tag = idler.send(b"IDLE")
            while not idler.readline().startswith(b"+"):
                pass
            op = b"+FLAGS" if k % 2 == 0 else b"-FLAGS"
            seq = 1 + (k // 2) % 100
            t = time.perf_counter()
            store_tag = actor.send(b"STORE %d %s (\\Flagged)" % (seq, op))
            while not _FETCH.search(idler.readline()):
                pass
            out.append(time.perf_counter() - t)
            idler.sock.sendall(b"DONE\r\n")
            idler.finish(tag)
            actor.finish(store_tag)
    finally:
        idler.close()
        actor.close()
    return out


def push_figures(latencies: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(latencies), "p90_s": pctl(latencies, 90), "p99_s": pctl(latencies, 99),
            "events": len(latencies)}


def pctl(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def run_suite(port: int, ids: list[str], uids: dict[str, bytes] | None, n: int, args: argparse.Namespace,
              idle_events: int, push_events: int) -> dict[str, dict[str, float]]:
    res: dict[str, dict[str, float]] = {"push_flags": push_figures(measure_push(port, push_events))}
    if args.push_only:
        return res
    c = connect(port)
    try:
        t = measure_fetch(c, "(FLAGS UID)", args.repeat, n)
        res["fetch_flags_uid"] = {"median_s": statistics.median(t)}
        t = measure_fetch(c, "BODY.PEEK[HEADER]", args.repeat, n)
        res["fetch_headers"] = {"median_s": statistics.median(t)}
        t = measure_raw_fetch(port, b"(FLAGS UID)", args.repeat)
        res["fetch_flags_uid_raw"] = {"median_s": statistics.median(t)}
        t = measure_raw_fetch(port, b"BODY.PEEK[HEADER]", args.repeat)
        res["fetch_headers_raw"] = {"median_s": statistics.median(t)}
        t = measure_search(c, ids, uids)
        res["search_message_id"] = {"median_s": statistics.median(t), "p99_s": pctl(t, 99)}
        for name, command in (("search_text", ("SEARCH", "TEXT", "quarterly")),
                              ("sort_subject", ("SORT", "(SUBJECT)", "UTF-8", "ALL")),
                              ("thread_references", ("THREAD", "REFERENCES", "UTF-8", "ALL"))):
            t = measure_uid_command(c, command, args.repeat)
            res[name] = {"median_s": statistics.median(t)}
    finally:
        c.logout()
    fl, ex = measure_idle(port, idle_events)
    res["idle_flags"] = {"median_s": statistics.median(fl), "p99_s": pctl(fl, 99)}
    res["idle_expunge"] = {"median_s": statistics.median(ex), "p99_s": pctl(ex, 99)}
    return res


# --- main ----------------------------------------------------------------------------------------------

TARGETS = {  # name -> (what the target is, check(ours, dovecot) -> bool)
    "fetch_flags_uid": ("<= 3x Dovecot", lambda o, d: d is None or o <= 3 * d),
    "fetch_headers": ("<= 3x Dovecot", lambda o, d: d is None or o <= 3 * d),
    "search_message_id": ("faster than Dovecot", lambda o, d: d is None or o < d),
    "search_text": ("<= 3x Dovecot", lambda o, d: d is None or o <= 3 * d),
    "sort_subject": ("<= 3x Dovecot", lambda o, d: d is None or o <= 3 * d),
    "thread_references": ("<= 3x Dovecot", lambda o, d: d is None or o <= 3 * d),
    "idle_flags": ("median < 2 ms, <= 3x", lambda o, d: o < 0.002 and (d is None or o <= 3 * d)),
    "idle_expunge": ("median < 2 ms, <= 3x", lambda o, d: o < 0.002 and (d is None or o <= 3 * d)),
    "push_flags": ("p50 < 1 ms", lambda o, d: o < 0.001),
}


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:9.2f} ms" if seconds < 10 else f"{seconds:9.2f} s "


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--searches", type=int, default=200, help="UID SEARCH HEADER Message-ID repetitions")
    ap.add_argument("--idle-events", type=int, default=200, help="IDLE events per kind (flags, expunge)")
    ap.add_argument("--dovecot-idle-events", type=int, default=50,
                    help="IDLE events per kind for Dovecot (it batches changes for 0.5 s, so each costs that)")
    ap.add_argument("--push-events", type=int, default=200, help="re-IDLE push events (push_flags)")
    ap.add_argument("--dovecot-push-events", type=int, default=20,
                    help="push events for Dovecot (each waits for its 0.5 s notify batching)")
    ap.add_argument("--push-only", action="store_true", help="measure push latency only (a short run)")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each FETCH 1:* (median reported)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--no-dovecot", action="store_true", help="measure our server only")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve_ours(args.messages, args.seed)
        return 0
    if args.push_only and args.messages == ap.get_default("messages"):
        args.messages = 500  # push latency does not depend on the mailbox size: keep the run short
    if args.idle_events > min(400, args.messages) or args.messages < 500:
        ap.error("--messages must be >= 500 and --idle-events <= 400")
    if args.push_events < 1 or args.dovecot_push_events < 1:
        ap.error("--push-events and --dovecot-push-events must be >= 1")

    t0 = time.perf_counter()
    messages = make_messages(args.messages, args.seed)
    total = sum(len(m) for m in messages)
    rng = random.Random(args.seed + 1)
    picks = [rng.randrange(args.messages) for _ in range(args.searches)]
    ids = [message_id(messages[i]) for i in picks]
    uids = {message_id(messages[i]): str(i + 1).encode() for i in picks}
    print(f"mailbox: {args.messages} messages, {total / 1e6:.1f} MB "
          f"(generated in {time.perf_counter() - t0:.1f} s)", flush=True)

    from recall_lab.harness.dovecot import dovecot_binary

    use_dovecot = not args.no_dovecot and dovecot_binary() is not None
    if not use_dovecot and not args.no_dovecot:
        print("dovecot not installed: measuring our server only")

    results: dict[str, dict[str, dict[str, float]]] = {}
    ours = OursProcess(args.messages, args.seed)
    try:
        print("measuring ours ...", flush=True)
        results["ours"] = run_suite(ours.port, ids, uids, args.messages, args, args.idle_events,
                                    args.push_events)
    finally:
        ours.stop()
    if use_dovecot:
        dv = DovecotProcess(messages)
        try:
            c = connect(dv.port)  # untimed: Dovecot indexes the new Maildir on first SELECT
            c.logout()
            print("measuring dovecot ...", flush=True)
            # Dovecot numbers a Maildir it finds in its own order: check one hit, not which UID
            results["dovecot"] = run_suite(dv.port, ids, None, args.messages, args,
                                           min(args.idle_events, args.dovecot_idle_events),
                                           min(args.push_events, args.dovecot_push_events))
        finally:
            dv.stop()

    rows = []
    print()
    print(f"{'operation':<20} {'ours':>12} {'dovecot':>12} {'ours/dovecot':>13}  {'target':<22} met")
    for name, (target, check) in TARGETS.items():
        if name not in results["ours"]:
            continue  # --push-only
        o = results["ours"][name]["median_s"]
        d = results.get("dovecot", {}).get(name, {}).get("median_s")
        ratio = o / d if d else None
        met = check(o, d)
        rows.append({"operation": name, "ours_median_s": o, "dovecot_median_s": d, "ratio": ratio,
                     "ours_p99_s": results["ours"][name].get("p99_s"),
                     "dovecot_p99_s": results.get("dovecot", {}).get(name, {}).get("p99_s"),
                     "target": target, "met": met})
        print(f"{name:<20} {fmt(o)} {fmt(d) if d else '        -   '} "
              f"{(f'{ratio:12.2f}x' if ratio else '            -')}  {target:<22} {'yes' if met else 'NO'}")
    for name in ("fetch_flags_uid_raw", "fetch_headers_raw"):
        if name not in results["ours"]:
            continue
        o = results["ours"][name]["median_s"]
        d = results.get("dovecot", {}).get(name, {}).get("median_s")
        ratio = f"{o / d:12.2f}x" if d else "            -"
        print(f"{name:<20} {fmt(o)} {fmt(d) if d else '        -   '} {ratio}  (raw socket, informational)")
    for name, pct in (("search_message_id", "p99"), ("idle_flags", "p99"), ("idle_expunge", "p99"),
                      ("push_flags", "p90"), ("push_flags", "p99")):
        if name not in results["ours"]:
            continue
        o = results["ours"][name][f"{pct}_s"]
        d = results.get("dovecot", {}).get(name, {}).get(f"{pct}_s")
        print(f"{name + ' ' + pct:<20} {fmt(o)} {fmt(d) if d else '        -   '}")
    print(f"(push_flags: {results['ours']['push_flags']['events']} events on ours"
          + (f", {results['dovecot']['push_flags']['events']} on Dovecot)" if "dovecot" in results else ")"))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "messages": args.messages, "mailbox_bytes": total, "searches": args.searches,
            "idle_events": args.idle_events, "dovecot_idle_events": min(args.idle_events, args.dovecot_idle_events),
            "push_events": args.push_events, "push_only": args.push_only,
            "repeat": args.repeat, "rows": rows, "raw": results,
        }, indent=2))
        print(f"\nwrote {args.json}")
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
