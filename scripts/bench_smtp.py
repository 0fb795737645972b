"""Benchmark of the lab's SMTP side, side by side with a bare aiosmtpd server in the same run.

Measures (defaults run in well under a minute):
1. Lab start to ready: `Lab.start()` of the default lab until all six listeners are bound, and until each has
   sent its greeting to a client; median of --starts runs.
2. Messages/s from submission to the recipient's INBOX, same domain (alice -> bob) and cross-domain
   (alice -> dave, through the relay and mail.example's MX), against a bare aiosmtpd server whose handler does
   nothing. The client pipelines (RFC 2920: MAIL, RCPT, DATA in one write; the end of one message and the next
   envelope in one write) over --conns connections, and runs in a separate process so the servers' loop has a
   CPU of its own, as it would in the bare case.
   Cross-domain is also compared with a bare relay chain (bare aiosmtpd -> queue -> aiosmtplib -> bare aiosmtpd),
   the same three SMTP roles with none of the lab's work, since the one-server bare rate cannot be reached by a
   path that runs two servers and a client in one loop.
3. Cross-domain latency: one message at a time, from the client writing the final "." to the store event of
   the message landing in dave's INBOX; p50 and p99 over --latency messages.

    python scripts/bench_smtp.py [--messages 4000] [--conns 4] [--starts 50] [--latency 300] [--rounds 3] [--json]

Rates are medians over --rounds rounds, each running the bare server, then the lab same-domain, then
cross-domain, so that drifting load on a shared machine hits all of them alike.

Targets: ready < 100 ms; lab rate >= 70% of bare aiosmtpd; cross-domain p99 < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiosmtplib  # noqa: E402
from aiosmtpd.smtp import SMTP  # noqa: E402

from recall_lab.fake_servers.store.base import MessageAppended  # noqa: E402
from recall_lab.harness.config import default_config  # noqa: E402
from recall_lab.harness.lab import Lab  # noqa: E402

DATE = "Tue, 24 Nov 2026 07:00:00 +0000"  # real clients send Date and Message-ID; the server adds neither then
BODY = "This is a benchmark message of about one kilobyte, in lines.\r\n" * 16


def make_message(sender: str, rcpt: str, n: int) -> bytes:
    return (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: bench {n}\r\nDate: {DATE}\r\n"
            f"Message-ID: <bench-{n}-{time.time_ns()}@bench>\r\n\r\n{BODY}").encode()


# -- the client (runs in a child process) --------------------------------------------------------------------
async def _reply(reader: asyncio.StreamReader) -> str:
    while True:
        line = (await reader.readline()).decode()
        if not line:
            raise ConnectionError("closed")
        if len(line) < 4 or line[3] != "-":
            return line


async def _expect(reader: asyncio.StreamReader, code: str, count: int = 1) -> None:
    for _ in range(count):
        line = await _reply(reader)
        if not line.startswith(code):
            raise RuntimeError(f"expected {code}, got {line!r}")


async def client_main(host: str, port: int, user: str, password: str, rcpt: str, total: int, conns: int) -> None:
    streams = []
    for _ in range(conns):
        reader, writer = await asyncio.open_connection(host, port)
        await _expect(reader, "220")
        writer.write(b"EHLO bench.client\r\n")
        await _expect(reader, "250")
        if user:
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            writer.write(f"AUTH PLAIN {token}\r\n".encode())
            await _expect(reader, "235")
        streams.append((reader, writer))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
    sender = user or "bench@bench.example"
    envelope = f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode()
    share = [total // conns + (1 if i < total % conns else 0) for i in range(conns)]

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: int, offset: int) -> None:
        if count == 0:
            return
        writer.write(envelope)
        await _expect(reader, "250", 2)
        await _expect(reader, "354")
        for i in range(count):
            last = i == count - 1
            writer.write(make_message(sender, rcpt, offset + i) + b".\r\n" + (b"" if last else envelope))
            await _expect(reader, "250", 1 if last else 3)
            if not last:
                await _expect(reader, "354")
        writer.write(b"QUIT\r\n")
        await _expect(reader, "221")
        writer.close()

    offsets = [sum(share[:i]) for i in range(conns)]
    await asyncio.gather(*(run(r, w, share[i], offsets[i]) for i, (r, w) in enumerate(streams)))
    sys.stdout.write("done\n")
    sys.stdout.flush()


# -- the orchestrating side ---------------------------------------------------------------------------------
async def drive_client(host: str, port: int, user: str, password: str, rcpt: str, total: int, conns: int,
                       arrived: asyncio.Event) -> float:
    """Run the client process; seconds from "go" until `arrived` is set (every message where it belongs)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--client", host, str(port), user, password, rcpt, str(total), str(conns),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    line = await proc.stdout.readline()
    if line.strip() != b"ready":
        raise RuntimeError(f"client failed: {line!r}")
    start = time.perf_counter()
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    waiter = asyncio.ensure_future(arrived.wait())
    exited = asyncio.ensure_future(proc.wait())
    await asyncio.wait({waiter, exited}, timeout=600, return_when=asyncio.FIRST_COMPLETED)
    if not waiter.done() and exited.done() and proc.returncode != 0:
        waiter.cancel()
        raise RuntimeError(f"client failed with status {proc.returncode}")
    await asyncio.wait_for(waiter, 600)
    elapsed = time.perf_counter() - start
    await proc.stdout.readline()
    await exited
    return elapsed


class Counter:
    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.done = asyncio.Event()

    def hit(self, n: int = 1) -> None:
        self.count += n
        if self.count >= self.target:
            self.done.set()


class BareHandler:
    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    async def handle_DATA(self, server, session, envelope) -> str:
        self.counter.hit()
        return "250 OK"


async def bench_bare(total: int, conns: int) -> float:
    counter = Counter(total)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(BareHandler(counter), hostname="bare.bench", enable_SMTPUTF8=True, loop=loop), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cpu0 = time.process_time()
        elapsed = await drive_client("127.0.0.1", port, "", "", "x@bare.example", total, conns, counter.done)
        cpu = time.process_time() - cpu0
    finally:
        server.close()
        await server.wait_closed()
    return total / elapsed, cpu / total * 1e6


class ForwardHandler:
    """The reference for cross-domain: accept, queue, forward with aiosmtplib to a second bare server."""

    def __init__(self, queue: asyncio.Queue) -> None:
        self.queue = queue

    async def handle_DATA(self, server, session, envelope) -> str:
        self.queue.put_nowait((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


async def bench_bare_relay(total: int, conns: int, relay_conns: int = 2) -> tuple[float, float]:
    """Bare aiosmtpd -> queue -> aiosmtplib (persistent connections) -> bare aiosmtpd: the same hops as the lab's
    cross-domain path, with none of its work (no auth, store, pipeline, spool, headers)."""
    counter = Counter(total)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    sink = await loop.create_server(
        lambda: SMTP(BareHandler(counter), hostname="sink.bench", enable_SMTPUTF8=True, loop=loop), "127.0.0.1", 0)
    front = await loop.create_server(
        lambda: SMTP(ForwardHandler(queue), hostname="front.bench", enable_SMTPUTF8=True, loop=loop),
        "127.0.0.1", 0)
    sink_port = sink.sockets[0].getsockname()[1]

    async def forward() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink_port, start_tls=False,
                                 local_hostname="front.bench")
        await client.connect()
        try:
            while True:
                item = await queue.get()
                if item is None:  # a sentinel, not cancel(): 3.11's wait_for inside aiosmtplib can swallow it
                    return
                await client.sendmail(*item)
        finally:
            client.close()

    workers = [loop.create_task(forward()) for _ in range(relay_conns)]
    try:
        cpu0 = time.process_time()
        elapsed = await drive_client("127.0.0.1", front.sockets[0].getsockname()[1], "", "", "x@sink.example", total,
                                     conns, counter.done)
        cpu = time.process_time() - cpu0
    finally:
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers, return_exceptions=True)
        for srv in (front, sink):
            srv.close()
            await srv.wait_closed()
    return total / elapsed, cpu / total * 1e6


async def bench_lab(total: int, conns: int, rcpt: str, web: bool = True) -> float:
    """`web`: with the lab's web server (as shipped) or without it (scripts/bench_web.py compares the two)."""
    async with Lab(default_config(), web=web) as lab:
        domain = lab.domain_of(rcpt)
        counter = Counter(total)

        def listener(event: object) -> None:
            if isinstance(event, MessageAppended) and event.user == rcpt and event.mailbox == "INBOX":
                counter.hit()

        lab.store(domain).subscribe(listener)
        sub = lab.submission("corp.example")
        cpu0 = time.process_time()
        elapsed = await drive_client(sub.host, sub.port, "alice@corp.example", "alice-password", rcpt, total, conns,
                                     counter.done)
        cpu = time.process_time() - cpu0
        await lab.wait_idle()
        lab.store(domain).unsubscribe(listener)
    return total / elapsed, cpu / total * 1e6


async def bench_start(runs: int) -> tuple[float, float]:
    """Median ms: start() returned (listening), and every listener's greeting received."""
    bound, greeted = [], []
    cfg = default_config()
    for _ in range(runs):
        t0 = time.perf_counter()
        lab = Lab(cfg)
        await lab.start()
        t1 = time.perf_counter()
        eps = [ep for d in lab.domains for ep in (lab.imap(d), lab.submission(d), lab.mx(d))]

        async def greet(ep) -> None:
            reader, writer = await asyncio.open_connection(ep.host, ep.port)
            await reader.readline()
            writer.close()
            await writer.wait_closed()

        await asyncio.gather(*(greet(ep) for ep in eps))
        t2 = time.perf_counter()
        await lab.stop()
        bound.append((t1 - t0) * 1000)
        greeted.append((t2 - t0) * 1000)
    return statistics.median(bound), statistics.median(greeted)


async def bench_latency(count: int) -> tuple[float, float]:
    samples: list[float] = []
    async with Lab(default_config()) as lab:
        arrived: asyncio.Event = asyncio.Event()
        stamp: list[float] = []

        def listener(event: object) -> None:
            if isinstance(event, MessageAppended) and event.mailbox == "INBOX":
                stamp.append(time.perf_counter())
                arrived.set()

        lab.store("mail.example").subscribe(listener)
        sub = lab.submission("corp.example")
        reader, writer = await asyncio.open_connection(sub.host, sub.port)
        await _expect(reader, "220")
        writer.write(b"EHLO bench\r\n")
        await _expect(reader, "250")
        token = base64.b64encode(b"\0alice@corp.example\0alice-password").decode()
        writer.write(f"AUTH PLAIN {token}\r\n".encode())
        await _expect(reader, "235")
        for i in range(count):
            arrived.clear()
            stamp.clear()
            writer.write(b"MAIL FROM:<alice@corp.example>\r\nRCPT TO:<dave@mail.example>\r\nDATA\r\n")
            await _expect(reader, "250", 2)
            await _expect(reader, "354")
            t0 = time.perf_counter()
            writer.write(make_message("alice@corp.example", "dave@mail.example", i) + b".\r\n")
            await _expect(reader, "250")
            await asyncio.wait_for(arrived.wait(), 10)
            samples.append((stamp[0] - t0) * 1000)
        writer.close()
        await lab.wait_idle()
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(round(0.99 * (len(samples) - 1))))]
    return statistics.median(samples), p99


async def main(args: argparse.Namespace) -> dict:
    results: dict = {}
    bound, greeted = await bench_start(args.starts)
    results["start_ms_median"] = round(bound, 2)
    results["start_to_greetings_ms_median"] = round(greeted, 2)
    # Alternate reference and lab runs and take medians: on a shared machine the load drifts during a run.
    # Besides wall-clock rates, the servers' CPU time per message (the client runs in another process) is a
    # steadier measure of the work each path does.
    bare, same, cross, chain = [], [], [], []
    for _ in range(args.rounds):
        bare.append(await bench_bare(args.messages, args.conns))
        same.append(await bench_lab(args.messages, args.conns, "bob@corp.example"))
        chain.append(await bench_bare_relay(args.messages, args.conns))
        cross.append(await bench_lab(args.messages, args.conns, "dave@mail.example"))
    med = statistics.median
    results["bare_aiosmtpd_msgs_per_s"] = round(med(r for r, _ in bare))
    results["same_domain_msgs_per_s"] = round(med(r for r, _ in same))
    results["cross_domain_msgs_per_s"] = round(med(r for r, _ in cross))
    results["same_domain_ratio"] = round(med(s_[0] / b[0] for s_, b in zip(same, bare, strict=True)), 3)
    results["cross_domain_ratio"] = round(med(c[0] / b[0] for c, b in zip(cross, bare, strict=True)), 3)
    results["bare_relay_chain_msgs_per_s"] = round(med(r for r, _ in chain))
    results["cross_domain_vs_chain_ratio"] = round(med(c[0] / b[0] for c, b in zip(cross, chain, strict=True)), 3)
    results["bare_relay_chain_cpu_us_per_msg"] = round(med(c for _, c in chain), 1)
    results["same_domain_ratio_per_round"] = [round(s_[0] / b[0], 3) for s_, b in zip(same, bare, strict=True)]
    results["bare_cpu_us_per_msg"] = round(med(c for _, c in bare), 1)
    results["same_domain_cpu_us_per_msg"] = round(med(c for _, c in same), 1)
    results["cross_domain_cpu_us_per_msg"] = round(med(c for _, c in cross), 1)
    results["same_domain_cpu_ratio"] = round(results["bare_cpu_us_per_msg"] / results["same_domain_cpu_us_per_msg"],
                                             3)
    results["cross_domain_cpu_ratio"] = round(
        results["bare_cpu_us_per_msg"] / results["cross_domain_cpu_us_per_msg"], 3)
    p50, p99 = await bench_latency(args.latency)
    results["cross_domain_latency_ms_p50"] = round(p50, 3)
    results["cross_domain_latency_ms_p99"] = round(p99, 3)
    results["params"] = {"messages": args.messages, "conns": args.conns, "starts": args.starts,
                         "latency_samples": args.latency, "rounds": args.rounds}
    return results


def report(results: dict) -> None:
    print(f"lab start, listeners bound (median of {results['params']['starts']}): "
          f"{results['start_ms_median']:.2f} ms   (target < 100 ms)")
    print(f"lab start, every listener greeted a client:          {results['start_to_greetings_ms_median']:.2f} ms")
    print(f"bare aiosmtpd, do-nothing handler:   {results['bare_aiosmtpd_msgs_per_s']:>7} msg/s")
    print(f"lab, submission -> INBOX same domain:  {results['same_domain_msgs_per_s']:>7} msg/s  "
          f"ratio {results['same_domain_ratio']:.2f}  (target >= 0.70; per round "
          f"{', '.join(f'{r:.2f}' for r in results['same_domain_ratio_per_round'])})")
    print(f"lab, submission -> INBOX cross-domain: {results['cross_domain_msgs_per_s']:>7} msg/s  "
          f"ratio {results['cross_domain_ratio']:.2f}")
    print(f"bare relay chain (aiosmtpd -> aiosmtplib -> aiosmtpd): {results['bare_relay_chain_msgs_per_s']} msg/s; "
          f"lab cross-domain / chain = {results['cross_domain_vs_chain_ratio']:.2f}")
    print(f"server CPU per message: bare {results['bare_cpu_us_per_msg']} us, same domain "
          f"{results['same_domain_cpu_us_per_msg']} us (bare/lab {results['same_domain_cpu_ratio']:.2f}), "
          f"cross-domain {results['cross_domain_cpu_us_per_msg']} us (bare/lab {results['cross_domain_cpu_ratio']:.2f}, "
          f"chain {results['bare_relay_chain_cpu_us_per_msg']} us)")
    print(f"cross-domain latency: p50 {results['cross_domain_latency_ms_p50']:.2f} ms, "
          f"p99 {results['cross_domain_latency_ms_p99']:.2f} ms  (target p99 < 20 ms)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        h, p, u, pw, r, n, c = sys.argv[2:9]
        asyncio.run(client_main(h, int(p), u, pw, r, int(n), int(c)))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--conns", type=int, default=4)
    parser.add_argument("--starts", type=int, default=50)
    parser.add_argument("--latency", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args()
    out = asyncio.run(main(ns))
    if ns.json:
        print(json.dumps(out))
    else:
        report(out)
