#!/usr/bin/env python3
"""How much one hostile message costs the server, as outside clients see it.

For each message of tests/imap/hostile_mime.py (by default the full-size ones: about 10 MB each, the 1.4 M
empty parts of the issue first), a fresh `recall-lab serve --store maildir:DIR` runs in its own process with
the message already in bob's INBOX (written into the Maildir by hand, as mail can arrive without passing the
MX). Then, with plain sockets:

  deliver    the same message sent to corp.example's MX with no login: the reply and how long it took
  fetch      bob FETCHes it: 1 (BODYSTRUCTURE), then 1 (BODY.PEEK[1.2.3]), then 1 ENVELOPE: time of each
  stall      meanwhile another client (alice) sends NOOP after NOOP over IMAP, and another SMTP client NOOPs
             the MX: the longest round trip each saw is how long the whole process stopped serving others
  rss        the server's peak RSS (VmHWM) and the RSS it keeps after (VmRSS at the end minus before)

    python scripts/bench_mime.py                          # this tree, every message, full size
    python scripts/bench_mime.py --baseline 5d9053b       # ... and the same with the code of a commit
    python scripts/bench_mime.py --only empty_parts --scale 0.1 --dovecot

--baseline REV runs the server from `git archive REV` in a temporary directory (git is only read); the
unbounded parser needs minutes and gigabytes for the full-size messages, so --baseline-scale (default 0.1)
shrinks them for it. --dovecot also serves each message from a private Dovecot (recall_lab.harness.dovecot) and times
the same FETCHes there (its imap process per client cannot stall the others; its peak RSS is the imap
process's).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.imap import hostile_mime  # noqa: E402 - after the path is set

BOB, BOB_PW = "bob@corp.example", "bob-password"
ALICE, ALICE_PW = "alice@corp.example", "alice-password"
_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


# --- a minimal IMAP / SMTP client over a plain socket ----------------------------------------------------------


class Imap:
    def __init__(self, port: int, timeout: float = 600.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.file.readline()
        self.n = 0

    def command(self, line: bytes) -> tuple[bytes, int]:
        """-> (tagged reply, bytes of untagged data read)."""
        self.n += 1
        tag = b"T%d" % self.n
        self.sock.sendall(tag + b" " + line + b"\r\n")
        size = 0
        while True:
            chunk = self.file.readline()
            if not chunk:
                raise ConnectionError("server closed the connection")
            size += len(chunk)
            m = _LITERAL.search(chunk)
            if m:
                size += len(self.file.read(int(m.group(1))))
                continue
            if chunk.startswith(tag + b" "):
                return chunk.strip(), size

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.command(b"LOGOUT")
        self.file.close()
        self.sock.close()


class Smtp:
    def __init__(self, port: int, timeout: float = 600.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.reply()
        self.command(b"EHLO bench.example")

    def reply(self) -> bytes:
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines).strip()

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def send(self, mail_from: str, rcpt: str, raw: bytes) -> bytes:
        self.command(b"MAIL FROM:<%s>" % mail_from.encode())
        self.command(b"RCPT TO:<%s>" % rcpt.encode())
        self.command(b"DATA")
        data = re.sub(rb"(?m)^\.", b"..", raw)
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        self.sock.sendall(data + b".\r\n")
        return self.reply()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.command(b"QUIT")
        self.file.close()
        self.sock.close()


class Probe(threading.Thread):
    """Another client asking NOOP back to back: the longest answer is how long the server stopped serving it."""

    def __init__(self, noop) -> None:  # noqa: ANN001 - a callable doing one NOOP
        super().__init__(daemon=True)
        self.noop = noop
        self.longest = 0.0
        self.count = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            started = time.perf_counter()
            self.noop()
            self.longest = max(self.longest, time.perf_counter() - started)
            self.count += 1

    def stop(self) -> float:
        self._stop_event.set()
        self.join(timeout=600)
        return self.longest


def _status(pid: int, field: str) -> int:
    """A VmXXX figure of /proc/<pid>/status, in bytes (0 when the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else 0


# --- our server, from this tree or from a commit ---------------------------------------------------------------


def _write_maildir(root: Path, user: str, raw: bytes) -> None:
    """The message in the user's INBOX, as a Maildir written by hand (no delivery path involved)."""
    home = root / user
    for sub in ("cur", "new", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    (home / "new" / f"{int(time.time())}.M1P{os.getpid()}.bench").write_bytes(raw)


class OurServer:
    def __init__(self, code: Path, raw: bytes) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-mime-"))
        _write_maildir(self.tmp / "mail" / "corp.example" / "mail", BOB, raw)  # DIR/<domain>/mail/<user>
        endpoints = self.tmp / "endpoints.json"
        starter = ("import sys; sys.path.insert(0, sys.argv[1]); from recall_lab.harness.cli import main; "
                   "sys.argv = ['recall-lab'] + sys.argv[2:]; sys.exit(main())")
        cmd = [sys.executable, "-c", starter, str(code), "serve", "--store", f"maildir:{self.tmp / 'mail'}",
               "--endpoints-file", str(endpoints)]
        self.proc = subprocess.Popen(cmd, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not endpoints.exists() or not endpoints.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"the server did not start: {err[-2000:]}")
            time.sleep(0.05)  # polling for the file the server writes once it listens
        corp = json.loads(endpoints.read_text())["domains"]["corp.example"]
        self.imap_port, self.mx_port = corp["imap"]["port"], corp["mx"]["port"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def measure_ours(code: Path, raw: bytes) -> dict[str, object]:
    server = OurServer(code, raw)
    pid = server.proc.pid
    out: dict[str, object] = {}
    try:
        probe_imap = Imap(server.imap_port)
        probe_imap.command(b"LOGIN %s %s" % (ALICE.encode(), ALICE_PW.encode()))
        probe_smtp = Smtp(server.mx_port)
        bob = Imap(server.imap_port)
        bob.command(b"LOGIN %s %s" % (BOB.encode(), BOB_PW.encode()))
        status, _ = bob.command(b"SELECT INBOX")
        assert b" OK" in status, status
        rss_before = _status(pid, "VmRSS")

        def probed(action):  # noqa: ANN001, ANN202 - run `action` with both probes running
            probes = [Probe(lambda: probe_imap.command(b"NOOP")), Probe(lambda: probe_smtp.command(b"NOOP"))]
            for p in probes:
                p.start()
            started = time.perf_counter()
            result = action()
            took = time.perf_counter() - started
            return result, took, max(p.stop() for p in probes)

        sender = Smtp(server.mx_port)
        reply, took, stall = probed(lambda: sender.send("mallory@evil.example", BOB, raw))
        sender.close()
        out["deliver"] = {"reply": reply.decode(errors="replace")[:70], "ms": took * 1e3, "stall_ms": stall * 1e3,
                          "rss_peak_mb": _status(pid, "VmHWM") / 2**20}
        for name, command in (("bodystructure", b"FETCH 1 (BODYSTRUCTURE)"),
                              ("body_1.2.3", b"FETCH 1 (BODY.PEEK[1.2.3])"), ("envelope", b"FETCH 1 ENVELOPE")):
            (status, size), took, stall = probed(lambda c=command: bob.command(c))
            out[name] = {"ok": b" OK" in status, "bytes": size, "ms": took * 1e3, "stall_ms": stall * 1e3,
                         "reply": status.decode(errors="replace")[:80]}
        bob.close()
        probe_imap.close()
        probe_smtp.close()
        out["rss_peak_mb"] = _status(pid, "VmHWM") / 2**20
        out["rss_kept_mb"] = (_status(pid, "VmRSS") - rss_before) / 2**20
    finally:
        server.stop()
    return out


def baseline_tree(rev: str) -> Path:
    """`git archive REV` unpacked in a temporary directory (git is only read)."""
    target = Path(tempfile.mkdtemp(prefix="bench-mime-baseline-"))
    archive = target / "tree.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target / "tree", filter="data")
    archive.unlink()
    return target / "tree"


# --- Dovecot ---------------------------------------------------------------------------------------------------


def measure_dovecot(raw: bytes) -> dict[str, object]:
    from recall_lab.harness.dovecot import DovecotServer, DovecotUnavailable, reachable_temp_dir

    out: dict[str, object] = {}
    with contextlib.ExitStack() as stack:
        mail = stack.enter_context(reachable_temp_dir("bench-mime-dovecot-mail-"))
        conf = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-mime-dovecot-")))
        maildir = mail / BOB
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
        (maildir / "cur" / f"{int(time.time())}.M1P1.bench,S={len(raw)}:2,").write_bytes(raw)
        try:
            server = stack.enter_context(DovecotServer(conf, {BOB: BOB_PW}, mail))
        except DovecotUnavailable:
            return {"skipped": "dovecot not installed"}
        bob = Imap(server.port)
        bob.command(b"LOGIN %s %s" % (BOB.encode(), BOB_PW.encode()))
        bob.command(b"SELECT INBOX")
        for name, command in (("bodystructure", b"FETCH 1 (BODYSTRUCTURE)"),
                              ("body_1.2.3", b"FETCH 1 (BODY.PEEK[1.2.3])"), ("envelope", b"FETCH 1 ENVELOPE")):
            started = time.perf_counter()
            status, size = bob.command(command)
            out[name] = {"ok": b" OK" in status, "bytes": size, "ms": (time.perf_counter() - started) * 1e3}
        out["rss_peak_mb"] = max((_status(pid, "VmHWM") for pid in _imap_pids()), default=0) / 2**20
        bob.close()
    return out


def _imap_pids() -> list[int]:
    """Dovecot imap processes (the ones serving clients)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "imap":
                    pids.append(int(entry.name))
    return pids


# --- report ----------------------------------------------------------------------------------------------------


def row(variant: str, who: str, size: int, m: dict) -> str:  # noqa: ANN401
    def ms(key: str, field: str = "ms") -> str:
        v = m.get(key, {})
        return f"{v[field]:9.0f}" if isinstance(v, dict) and field in v else f"{'-':>9}"
    stall = max((m[k]["stall_ms"] for k in ("bodystructure", "body_1.2.3", "envelope")
                 if isinstance(m.get(k), dict) and "stall_ms" in m[k]), default=None)
    deliver = m.get("deliver", {})
    reply = deliver.get("reply", "-")[:3] if isinstance(deliver, dict) else "-"
    return (f"{variant:20} {who:9} {size / 1e6:6.1f} {reply:>4} {ms('deliver')} {ms('deliver', 'stall_ms')} "
            f"{ms('bodystructure')} {ms('body_1.2.3')} {ms('envelope')} "
            f"{(f'{stall:9.0f}' if stall is not None else f'{chr(45):>9}')} "
            f"{m.get('rss_peak_mb', 0):8.0f} {m.get('rss_kept_mb', float('nan')):8.0f}")


HEADER = (f"{'message':20} {'server':9} {'MB':>6} {'MX':>4} {'deliv ms':>9} {'stall ms':>9} {'BODYSTR':>9} "
          f"{'BODY[1.2.3]':>9} {'ENVELOPE':>9} {'stall ms':>9} {'peak MB':>8} {'kept MB':>8}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated message names (default: all)")
    ap.add_argument("--scale", type=float, default=1.0, help="size factor for the messages (default 1)")
    ap.add_argument("--baseline", metavar="REV", help="also run the server from this commit")
    ap.add_argument("--baseline-scale", type=float, default=0.1, help="size factor for the baseline runs")
    ap.add_argument("--dovecot", action="store_true", help="also time the FETCHes on a private Dovecot")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(hostile_mime.HOSTILE)
    defaults = {"empty_parts": 1_400_000, "typed_parts": 120_000, "nested_rfc822": 100_000,
                "nested_multipart": 100_000, "huge_header": 1_000_000, "long_boundary_lines": 100,
                "deep_body": 10_000_000}
    baseline = baseline_tree(args.baseline) if args.baseline else None
    results: dict[str, dict[str, object]] = {}
    print(HEADER)
    print("(deliv: MX DATA reply time; stall: longest NOOP another IMAP or SMTP client waited; kept: RSS growth)")
    try:
        for name in names:
            build, _limit = hostile_mime.HOSTILE[name]
            raw = build(max(1, int(defaults[name] * args.scale)))
            results[name] = {"size": len(raw), "ours": measure_ours(ROOT, raw)}
            print(row(name, "ours", len(raw), results[name]["ours"]), flush=True)  # type: ignore[arg-type]
            if baseline is not None:
                small = build(max(1, int(defaults[name] * args.baseline_scale)))
                results[name]["baseline"] = {"size": len(small), **measure_ours(baseline, small)}
                print(row(name, "baseline", len(small), results[name]["baseline"]), flush=True)  # type: ignore[arg-type]
            if args.dovecot:
                results[name]["dovecot"] = measure_dovecot(raw)
                print(row(name, "dovecot", len(raw), results[name]["dovecot"]), flush=True)  # type: ignore[arg-type]
    finally:
        if baseline is not None:
            shutil.rmtree(baseline.parent, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
