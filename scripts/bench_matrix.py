#!/usr/bin/env python3
"""Benchmark of `recall-lab matrix`: trials per second over the real servers, and how it scales.

What it measures, in one run:
  1. the reference: a bare recall loop with no scenario engine and no client emulators (submit a message over
     SMTP, recall it with the recall agent, read the report), one recipient after the other and side by side,
     so the matrix figures below read as a ratio to "just the protocol work a recall needs";
  2. scaling with trials: all built-in scenarios in both modes, N trials per cell (20 cells), default settings
     (2 worker processes on a multi-core machine);
  3. scaling with concurrent recipients: the same matrix at a fixed size with 1, 2, 4, 8 recipients per
     scenario and mode, in one process and in two.

Target: 1,000 trials in under 20 s on a 2-core machine.

    python scripts/bench_matrix.py                 # the default sizes (a couple of minutes)
    python scripts/bench_matrix.py --quick         # smaller sizes, for a smoke run
    python scripts/bench_matrix.py --json out.json # also write the figures
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recall_lab.harness.matrix import MatrixOptions, run_matrix_blocking  # noqa: E402
from recall_lab.harness.scenarios import builtin_scenarios  # noqa: E402

TARGET_TRIALS, TARGET_SECONDS = 1000, 20.0


async def _bare_recalls(count: int, parallel: int) -> float:
    """Seconds for `count` bare recalls (submit + agent recall + report), `parallel` senders side by side."""
    import aiosmtplib

    from recall_lab.harness.config import DomainConfig, LabConfig
    from recall_lab.harness.lab import Lab
    from recall_lab.harness.recall_agent import RecallAgent

    senders = [f"s{k}" for k in range(parallel)]
    config = LabConfig(domains=[DomainConfig.with_users("corp.example", "organisation", [*senders, "bob"]),
                                DomainConfig.with_users("mail.example", "external", ["dave"])])
    async with Lab(config) as lab:
        ep = lab.submission("corp.example")

        async def one(sender: str, n: int) -> None:
            user = f"{sender}@corp.example"
            agent = RecallAgent(lab, user, f"{sender}-password")
            for i in range(n):
                msg = EmailMessage()
                msg["From"], msg["To"], msg["Subject"] = user, "bob@corp.example", f"bare {i}"
                msg["Message-ID"] = f"<bare.{sender}.{i}@corp.example>"
                msg.set_content("figures\n")
                await aiosmtplib.send(msg, hostname=ep.host, port=ep.port, username=user,
                                      password=f"{sender}-password", start_tls=False,
                                      local_hostname="corp.example")
                handle = await agent.recall(msg["Message-ID"])
                await handle.report(timeout=10)

        started = time.perf_counter()
        await asyncio.gather(*(one(s, count // parallel) for s in senders))
        return time.perf_counter() - started


def _matrix(trials: int, concurrency: int, workers: int) -> tuple[float, int, int]:
    options = MatrixOptions(scenarios=builtin_scenarios(), trials=trials, seed=1, concurrency=concurrency,
                            workers=workers, transcripts=False)
    result = run_matrix_blocking(options)
    errors = sum(1 for t in result.all_trials() if t.error)
    return result.elapsed, result.trial_count, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    workers = 2 if cores >= 2 else 1
    sizes = [5, 15] if args.quick else [5, 15, 50]  # trials per cell; x20 cells = total trials
    sweep_trials = 5 if args.quick else 15
    figures: dict = {"cores": cores, "load_average": os.getloadavg(), "reference": {}, "trials": [],
                     "concurrency": []}

    print(f"recall-lab matrix benchmark on {cores} cores (load average {os.getloadavg()[0]:.1f})\n")
    print("Reference: bare recalls (SMTP submit + agent recall + report), no engine, no client emulators")
    ref_count = 40 if args.quick else 120
    for parallel in (1, 4):
        seconds = asyncio.run(_bare_recalls(ref_count, parallel))
        rate = ref_count / seconds
        figures["reference"][str(parallel)] = rate
        print(f"  {parallel} sender(s) side by side: {ref_count} recalls in {seconds:5.2f} s = {rate:6.1f}/s")
    ref = figures["reference"]["4"]

    print(f"\nScaling with trials (all 10 scenarios x 2 modes, {workers} worker process(es), 2 recipients each)")
    print(f"  {'trials':>7} {'seconds':>8} {'trials/s':>9} {'vs bare':>8} {'errors':>7}")
    for per_cell in sizes:
        seconds, count, errors = _matrix(per_cell, 2, workers)
        rate = count / seconds
        figures["trials"].append({"trials": count, "seconds": seconds, "rate": rate, "errors": errors})
        print(f"  {count:7d} {seconds:8.2f} {rate:9.1f} {rate / ref:7.2f}x {errors:7d}")

    print(f"\nScaling with concurrent recipients ({sweep_trials * 20} trials)")
    print(f"  {'recipients':>10} {'1 process':>10} {f'{workers} processes':>12}")
    for conc in (1, 2, 4, 8):
        row = {"recipients": conc}
        for w in sorted({1, workers}):
            seconds, count, _errors = _matrix(sweep_trials, conc, w)
            row[f"workers_{w}"] = count / seconds
        figures["concurrency"].append(row)
        print(f"  {conc:10d} {row['workers_1']:9.1f}/s {row.get(f'workers_{workers}', 0):11.1f}/s")

    big = next((f for f in figures["trials"] if f["trials"] >= TARGET_TRIALS), None)
    if big is not None:
        ok = big["seconds"] < TARGET_SECONDS
        print(f"\nTarget: {TARGET_TRIALS} trials in < {TARGET_SECONDS:g} s: {big['seconds']:.1f} s "
              f"({'met' if ok else 'NOT met'})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
