#!/usr/bin/env python3
"""Benchmark of cloud recall: latency over real SMTP + IMAP, and cost as the recipient's mailbox grows.

Two parts, each beside a reference measured in the same run (figures are reported as ratios too):

1. End to end (a real Lab, corp.example in cloud mode): bob idles on his INBOX over IMAP; alice sends an
   original, then submits its recall over SMTP submission. Measured from the start of the recall's submission
   to (a) the original's disappearance from bob's server mailbox (the store's MessagesExpunged event) and (b)
   the EXPUNGE pushed to bob's idling client. Reference: the same path for an ordinary message, from its
   submission to its arrival in the store and to the EXISTS seen by the idling client.
2. Cost vs mailbox size (1k, 10k, 100k messages in bob's mailbox): the recall policy's whole work for one
   recall (parse, trust check, find by Message-ID, expunge, report), beside a reference that finds the original
   the way a server without a Message-ID index must: scanning every message of every folder.

    python scripts/bench_recall.py                       # defaults: a few minutes at most
    python scripts/bench_recall.py --recalls 100 --sizes 1000,10000 --skip-e2e
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from email import policy as email_policy

from fake_servers.accounts import Accounts
from fake_servers.pipeline import Delivery, DomainServices, ServiceHooks
from fake_servers.recall.format import RecallInstruction, build_recall_message
from fake_servers.recall.policy import RecallPolicy, RecallSettings, recall_from_mailbox
from fake_servers.store.base import MailStore, MessagesExpunged
from fake_servers.store.memory import MemoryStore

ALICE, BOB = "alice@corp.example", "bob@corp.example"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def ms(x: float) -> str:
    return f"{x * 1000:.2f}"


def original_raw(i: int) -> bytes:
    return (f"From: Alice <{ALICE}>\r\nTo: {BOB}\r\nSubject: message {i}\r\nMessage-ID: <m{i}@corp.example>\r\n"
            f"Date: Tue, 24 Nov 2026 09:00:00 +0000\r\n\r\nbody of message {i}\r\n").encode()


# --- part 2: cost vs mailbox size, in process ----------------------------------------------------------------


def _services(store: MailStore) -> DomainServices:
    accounts = Accounts({ALICE: "alice-password", BOB: "bob-password"})

    def deliver_local(user, raw, *, mail_from="", mailbox="INBOX"):
        return store.append(user, mailbox, raw)

    def unused(*_a, **_k):
        raise RuntimeError("not used")

    hooks = ServiceHooks(deliver_local=deliver_local, save_sent_copy=unused, submit=unused, release=unused,
                         discard=unused, held=lambda: [], spawn=unused)
    return DomainServices(domain="corp.example", role="organisation", store=store, accounts=accounts,
                          local_domains=["corp.example"], config={}, hooks=hooks)


def scan_recall(store: MailStore, user: str, message_id: str) -> int:
    """Reference: find the original without an index (every record of every folder), then expunge it."""
    removed = 0
    for info in store.list_mailboxes(user):
        uids = [r.uid for r in store.messages(user, info.name) if r.message_id == message_id]
        if uids:
            removed += len(store.expunge(user, info.name, uids, origin="bench"))
    return removed


async def size_part(sizes: list[int], recalls: int, seed: int) -> list[dict]:
    rows = []
    rng = random.Random(seed)
    for size in sizes:
        store = MemoryStore()
        for user in (ALICE, BOB):
            store.ensure_user(user)
        store.create_mailbox(BOB, "Archive")
        for i in range(size):  # a tenth of the mailbox filed in Archive, as people do
            store.append(BOB, "Archive" if i % 10 == 0 else "INBOX", original_raw(i))
        services = _services(store)
        policy = RecallPolicy({}, services)
        targets = rng.sample(range(size), min(size, 4 * recalls))
        index_times, scan_times, core_times = [], [], []
        settings = RecallSettings()
        for n, i in enumerate(targets):
            mid = f"<m{i}@corp.example>"
            if n % 4 == 1:
                t0 = time.perf_counter()
                result = recall_from_mailbox(store, BOB, mid, ALICE, settings)
                core_times.append(time.perf_counter() - t0)
                assert result.status.succeeded
            elif n % 2 == 0:
                msg = build_recall_message(RecallInstruction(mid, f"message {i}", ALICE, "Alice", to=(BOB,)))
                d = Delivery(domain="corp.example", channel="submission", auth_user=ALICE, mail_from=ALICE,
                             recipients=[BOB], raw=msg.as_bytes(policy=email_policy.SMTP), queue_id=f"q{n}")
                t0 = time.perf_counter()
                await policy.on_delivery(d, services)
                index_times.append(time.perf_counter() - t0)
                assert not store.find_by_message_id(BOB, mid)
            else:
                t0 = time.perf_counter()
                assert scan_recall(store, BOB, mid) == 1
                scan_times.append(time.perf_counter() - t0)
        rows.append({"size": size, "index_p50": pct(index_times, 50), "index_p99": pct(index_times, 99),
                     "core_p50": pct(core_times, 50), "core_p99": pct(core_times, 99),
                     "scan_p50": pct(scan_times, 50), "scan_p99": pct(scan_times, 99)})
        print(f"  size {size}: recall policy p50 {ms(rows[-1]['index_p50'])} ms, find+expunge "
              f"{ms(rows[-1]['core_p50'])} ms, "
              f"scan reference p50 {ms(rows[-1]['scan_p50'])} ms", file=sys.stderr)
    return rows


# --- part 1: end to end over SMTP and IMAP --------------------------------------------------------------------


async def e2e_part(recalls: int, warmup: int) -> dict | None:
    try:
        import aioimaplib
        import aiosmtplib

        from harness.config import default_config
        from harness.lab import Lab
    except ImportError as exc:
        print(f"  end-to-end part skipped: {exc}", file=sys.stderr)
        return None

    async with Lab(default_config(), store="memory") as lab:
        store = lab.store("corp.example")
        sub = lab.submission("corp.example")
        imap_ep = lab.imap("corp.example")
        idle = aioimaplib.IMAP4(host=imap_ep.host, port=imap_ep.port, timeout=10)
        await idle.wait_hello_from_server()
        await idle.login(BOB, lab.password(BOB))
        await idle.select("INBOX")
        pushes: asyncio.Queue[tuple[float, str]] = asyncio.Queue()

        async def idle_loop() -> None:
            while True:
                waiter = await idle.idle_start(timeout=60)
                while idle.has_pending_idle_command():
                    lines = await idle.wait_server_push()
                    now = time.perf_counter()
                    if isinstance(lines, list):
                        for line in lines:
                            text = line.decode(errors="replace") if isinstance(line, bytes) else str(line)
                            pushes.put_nowait((now, text))
                    elif lines == aioimaplib.STOP_WAIT_SERVER_PUSH:
                        break
                idle.idle_done()
                await asyncio.wait_for(waiter, 10)

        store_events: asyncio.Queue[tuple[float, object]] = asyncio.Queue()

        def on_event(event: object) -> None:
            if getattr(event, "user", None) == BOB and getattr(event, "mailbox", None) == "INBOX":
                store_events.put_nowait((time.perf_counter(), event))

        store.subscribe(on_event)
        idler = asyncio.create_task(idle_loop())
        smtp = aiosmtplib.SMTP(hostname=sub.host, port=sub.port, start_tls=False)
        await smtp.connect()
        await smtp.login(ALICE, lab.password(ALICE))

        async def next_store(kind: type, deadline: float = 10) -> float:
            while True:
                at, event = await asyncio.wait_for(store_events.get(), deadline)
                if isinstance(event, kind):
                    return at

        async def next_push(word: str) -> float:
            while True:
                at, text = await asyncio.wait_for(pushes.get(), 10)
                if word in text.upper():
                    return at

        deliver_store, deliver_push, recall_store, recall_push = [], [], [], []
        try:
            for n in range(warmup + recalls):
                mid = f"<bench-{n}-{random.random()}@corp.example>".replace("0.", "")
                raw = (f"From: Alice <{ALICE}>\r\nTo: {BOB}\r\nSubject: bench {n}\r\nMessage-ID: {mid}\r\n\r\n"
                       f"body {n}\r\n").encode()
                t0 = time.perf_counter()
                await smtp.sendmail(ALICE, [BOB], raw)
                from fake_servers.store.base import MessageAppended

                t_store = await next_store(MessageAppended)
                t_push = await next_push("EXISTS")
                msg = build_recall_message(RecallInstruction(mid, f"bench {n}", ALICE, "Alice", to=(BOB,)))
                t1 = time.perf_counter()
                await smtp.send_message(msg, sender=ALICE, recipients=[BOB])
                r_store = await next_store(MessagesExpunged)
                r_push = await next_push("EXPUNGE")
                if n >= warmup:
                    deliver_store.append(t_store - t0)
                    deliver_push.append(t_push - t0)
                    recall_store.append(r_store - t1)
                    recall_push.append(r_push - t1)
                # drain the report (alice's INBOX) and any other events before the next round
                while not store_events.empty():
                    store_events.get_nowait()
        finally:
            idler.cancel()
            store.unsubscribe(on_event)
            await smtp.quit()
            try:
                await idle.logout()
            except Exception:
                pass
    return {"recall_store": recall_store, "recall_push": recall_push, "deliver_store": deliver_store,
            "deliver_push": deliver_push}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recalls", type=int, default=300, help="recalls per measurement (default 300)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--sizes", default="1000,10000,100000", help="recipient mailbox sizes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-e2e", action="store_true", help="only the in-process size part")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    async def run() -> None:
        print("## Recall benchmark\n")
        if not args.skip_e2e:
            print("part 1: end to end ...", file=sys.stderr)
            e2e = await e2e_part(args.recalls, args.warmup)
            if e2e is not None:
                print(f"End to end, {args.recalls} recalls (after {args.warmup} warm-up), loopback, memory store:\n")
                print("| measure | p50 ms | p99 ms | reference: ordinary delivery p50 / p99 ms | ratio p50 |")
                print("|---|---|---|---|---|")
                for label, key, ref in (("recall -> gone from the server mailbox", "recall_store", "deliver_store"),
                                        ("recall -> EXPUNGE at the idling client", "recall_push", "deliver_push")):
                    a, b = e2e[key], e2e[ref]
                    print(f"| {label} | {ms(pct(a, 50))} | {ms(pct(a, 99))} | {ms(pct(b, 50))} / {ms(pct(b, 99))} "
                          f"| {pct(a, 50) / pct(b, 50):.2f} |")
                print()
        print("part 2: cost vs mailbox size ...", file=sys.stderr)
        rows = await size_part(sizes, args.recalls, args.seed)
        print(f"Cost of one recall in the recipient's mailbox ({args.recalls} recalls per size; reference: "
              "finding the original by scanning every folder):\n")
        print("| mailbox size | whole recall policy p50 / p99 ms | find+expunge by index p50 / p99 ms "
              "| reference: find+expunge by scan p50 / p99 ms | ratio index/scan p50 |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['size']:,} | {ms(r['index_p50'])} / {ms(r['index_p99'])} "
                  f"| {ms(r['core_p50'])} / {ms(r['core_p99'])} | {ms(r['scan_p50'])} / {ms(r['scan_p99'])} "
                  f"| {r['core_p50'] / r['scan_p50']:.3f} |")
        if len(rows) > 1:
            first, last = rows[0], rows[-1]
            print(f"\np50 at {last['size']:,} / at {first['size']:,}: whole policy "
                  f"{last['index_p50'] / first['index_p50']:.2f}x, find+expunge by index "
                  f"{last['core_p50'] / first['core_p50']:.2f}x, scan reference "
                  f"{last['scan_p50'] / first['scan_p50']:.1f}x")

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


