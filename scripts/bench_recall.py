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

import aiosmtplib

from recall_lab.fake_servers.recall.format import RecallInstruction, build_recall_message
from recall_lab.fake_servers.recall.policy import RecallSettings, recall_from_mailbox
from recall_lab.fake_servers.store.base import MailStore, MessageAppended, MessagesExpunged

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


# --- part 2: cost vs mailbox size ---------------------------------------------------------------------------


def scan_recall(store: MailStore, user: str, message_id: str) -> int:
    """Reference: find the original without an index (every record of every folder), then expunge it."""
    removed = 0
    for info in store.list_mailboxes(user):
        uids = [r.uid for r in store.messages(user, info.name) if r.message_id == message_id]
        if uids:
            removed += len(store.expunge(user, info.name, uids, origin="bench"))
    return removed


async def size_part(sizes: list[int], recalls: int, seed: int) -> list[dict]:
    """Per size: recalls over SMTP timed to the store's expunge, and the find+expunge step alone, by the index
    (what the recall policy does) and by scanning (the reference), on the same store."""
    from recall_lab.harness.config import default_config
    from recall_lab.harness.lab import Lab

    rows = []
    rng = random.Random(seed)
    for size in sizes:
        async with Lab(default_config(), store="memory") as lab:
            store = lab.store("corp.example")
            store.create_mailbox(BOB, "Archive")
            targets = rng.sample(range(size), min(size, 3 * recalls))
            for i in range(size):  # a tenth of the mailbox filed in Archive, as people do
                store.append(BOB, "Archive" if i % 10 == 0 else "INBOX", original_raw(i))
            for i in targets:  # alice's Sent copies: the proof the originals are hers
                store.append(ALICE, "Sent", original_raw(i), flags=["\\Seen"])
            expunged: asyncio.Queue[float] = asyncio.Queue()

            def on_event(event: object, queue: asyncio.Queue[float] = expunged) -> None:
                if isinstance(event, MessagesExpunged) and event.user == BOB:
                    queue.put_nowait(time.perf_counter())

            sub = lab.submission("corp.example")
            smtp = aiosmtplib.SMTP(hostname=sub.host, port=sub.port, start_tls=False,
                                   local_hostname="corp.example")
            await smtp.connect()
            await smtp.login(ALICE, lab.password(ALICE))
            store.subscribe(on_event)
            e2e, index, scan = [], [], []
            settings = RecallSettings()
            try:
                for n, i in enumerate(targets):
                    mid = f"<m{i}@corp.example>"
                    if n % 3 == 0:
                        msg = build_recall_message(RecallInstruction(mid, f"message {i}", ALICE, "Alice",
                                                                     to=(BOB,)))
                        t0 = time.perf_counter()
                        await smtp.send_message(msg, sender=ALICE, recipients=[BOB])
                        e2e.append(await asyncio.wait_for(expunged.get(), 10) - t0)
                    elif n % 3 == 1:
                        t0 = time.perf_counter()
                        result = recall_from_mailbox(store, BOB, mid, ALICE, settings)
                        index.append(time.perf_counter() - t0)
                        assert result.status.succeeded, result
                        expunged.get_nowait()
                    else:
                        t0 = time.perf_counter()
                        assert scan_recall(store, BOB, mid) == 1
                        scan.append(time.perf_counter() - t0)
                        expunged.get_nowait()
            finally:
                store.unsubscribe(on_event)
                await smtp.quit()
        row = {"size": size}
        for key, values in (("e2e", e2e), ("index", index), ("scan", scan)):
            row[f"{key}_p50"], row[f"{key}_p99"] = pct(values, 50), pct(values, 99)
        rows.append(row)
        print(f"  size {size}: recall over SMTP p50 {ms(row['e2e_p50'])} ms, find+expunge by index "
              f"{ms(row['index_p50'])} ms, by scan {ms(row['scan_p50'])} ms", file=sys.stderr)
    return rows


# --- part 1: end to end over SMTP and IMAP --------------------------------------------------------------------


async def e2e_part(recalls: int, warmup: int) -> dict | None:
    try:
        import aioimaplib

        from recall_lab.harness.config import default_config
        from recall_lab.harness.lab import Lab
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
                while idle.has_pending_idle():
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
        smtp = aiosmtplib.SMTP(hostname=sub.host, port=sub.port, start_tls=False,
                               local_hostname="corp.example")
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
        print(f"Cost of one recall as the recipient's mailbox grows ({args.recalls} recalls per size and "
              "measure; reference: finding the original by scanning every folder, as without an index):\n")
        print("| mailbox size | recall over SMTP -> gone, p50 / p99 ms | find+expunge by index p50 / p99 ms "
              "| reference: by scan p50 / p99 ms | ratio index/scan p50 |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['size']:,} | {ms(r['e2e_p50'])} / {ms(r['e2e_p99'])} "
                  f"| {ms(r['index_p50'])} / {ms(r['index_p99'])} | {ms(r['scan_p50'])} / {ms(r['scan_p99'])} "
                  f"| {r['index_p50'] / r['scan_p50']:.3f} |")
        if len(rows) > 1:
            first, last = rows[0], rows[-1]
            print(f"\np50 at {last['size']:,} / at {first['size']:,}: recall over SMTP "
                  f"{last['e2e_p50'] / first['e2e_p50']:.2f}x, find+expunge by index "
                  f"{last['index_p50'] / first['index_p50']:.2f}x, scan reference "
                  f"{last['scan_p50'] / first['scan_p50']:.1f}x")

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


