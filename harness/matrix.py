"""The scenario matrix: N trials of each chosen scenario in each recall mode, over real servers.

Why labs are grouped: the recall mode and the organisation's policies (retention age, delayed send) are settings
of a running server, so trials that need the same settings share one lab: one lab per (mode, policies) group,
all started in the same event loop and run side by side. Inside a lab every scenario gets `concurrency` slots
(a sender and a recipient of their own, with their clients), and its trials are dealt to the slots; servers
are never restarted between trials.

Retention is the exception to running trials side by side: its purge compares ages in Trash against one clock,
and in simulated time that clock must be the trial's. A lab whose organisation purges therefore runs its trials
one after another on one shared simulated clock, which the retention policy reads (its `clock` is injectable).
Rows with injected faults (`faults`) are grouped by their rules and run the same way: a domain's rules hold for
every slot of its lab, and an outage's window counts on the servers' clock, which must be the trial's.

Transcripts: trial 0 of each scenario (in the first mode run) is carried out alone in its lab while a
transcript recorder listens; those lines are the per-scenario transcript of the HTML report and the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from recall_lab.fake_servers.transcript import TranscriptLine, TranscriptRecorder
from recall_lab.harness.config import ConfigError, DomainConfig, LabConfig, default_config, default_password
from recall_lab.harness.scenarios.clock import SimClock, WallClock
from recall_lab.harness.scenarios.engine import (
    CAST,
    EXTERNAL,
    ORG,
    TRIAL_REPORT_DELAY,
    Observer,
    TrialEngine,
    cast_user,
)
from recall_lab.harness.scenarios.model import MODES, Scenario
from recall_lab.harness.scenarios.results import MatrixResult, TrialResult
from recall_lab.harness.scenarios.timeline import plan_trial, trial_seed

DEFAULT_CONCURRENCY = 2

#: What a matrix tells a progress bar: (trials done, trials in all).
Progress = Callable[[int, int], None]


@dataclass
class MatrixOptions:
    scenarios: Sequence[Scenario]
    trials: int = 20
    seed: int | str = 1
    modes: Sequence[str] = MODES
    concurrency: int = DEFAULT_CONCURRENCY  # slots per scenario per lab: concurrent recipients
    realtime: bool = False
    speed: float = 60.0  # --realtime: simulated seconds per real second
    transcripts: bool = True
    base_config: LabConfig | None = None  # the lab the groups are built from (default_config())
    port_base: int | None = None  # listen on fixed ports (first group only; the others use ephemeral ports)
    progress: Progress | None = None
    observer: Observer | None = None  # called after every event of every trial (the demo narrates from it)
    transcript_sink: Callable[[str, TranscriptLine], None] | None = None  # (mode, line) of recorded trials
    only_trials: Sequence[int] | None = None  # run just these trial indexes (the demo narrates one)
    cells: Sequence[tuple[str, str]] | None = None  # run just these (scenario, mode) cells (worker processes)
    transcript_mode: str | None = None  # the mode whose first trial is the scenario's transcript (default: first)
    workers: int = 1  # processes (run_matrix_blocking); each runs its share of the cells in labs of its own
    web_port: int | None = None  # the first group's lab serves its web console here, with web_token (demo --web)
    web_token: str | None = None

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError("trials must be at least 1")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.only_trials is not None and (not self.only_trials or min(self.only_trials) < 0):
            raise ValueError("only_trials must name trial indexes >= 0")
        for m in self.modes:
            if m not in MODES:
                raise ValueError(f"unknown recall mode {m!r} (known: {', '.join(MODES)})")


class GatedRecorder(TranscriptRecorder):
    """A transcript recorder that keeps lines only while `capturing` (so one trial's lines can be singled
    out of a lab that runs many)."""

    capturing: bool = False

    def record(self, session: str, direction: Any, data: bytes) -> None:  # type: ignore[override]
        if self.capturing:
            super().record(session, direction, data)

    def take(self) -> list[str]:
        """The lines kept so far, as text, and forget them (called between trials, on the lab's loop)."""
        lines = [f"{line.session} {line.direction}: {line.text}" for line in self.lines]
        del self.lines[:len(lines)]
        return lines


@dataclass
class Group:
    mode: str
    policies: dict[str, Any]
    scenarios: list[Scenario] = field(default_factory=list)
    faults: tuple[str, ...] = ()  # the rules its trials add (each trial its own, one trial at a time)

    @property
    def exclusive_clock(self) -> bool:
        return any(s.purge_deleted_after is not None or s.faults for s in self.scenarios)


def group_scenarios(scenarios: Sequence[Scenario], modes: Sequence[str],
                    cells: Sequence[tuple[str, str]] | None = None) -> list[Group]:
    groups: dict[tuple[str, tuple], Group] = {}
    wanted = set(cells) if cells is not None else None
    for mode in modes:
        for s in scenarios:
            if mode not in s.modes or (wanted is not None and (s.name, mode) not in wanted):
                continue
            policies = s.lab_policies
            key = (mode, tuple(sorted((k, repr(v)) for k, v in policies.items())), s.faults)
            groups.setdefault(key, Group(mode, policies, faults=s.faults)).scenarios.append(s)
    return list(groups.values())


def lab_config(mode: str, policies: dict[str, Any], slots: int, base: LabConfig | None = None,
               faults: Sequence[str] = ()) -> LabConfig:
    """The lab of one group: the base config (default: corp.example + mail.example) with a cast for `slots`
    slots (alice..aliceN, bob.., carol.. at the organisation, dave.. outside) and the group's policies.

    `faults` are the group's rules ("DOMAIN:SPEC"): the engine adds them per trial, so the lab starts with no
    rule (the base config's are left out, since each trial clears its domains' rules); each must name one of
    the lab's domains."""
    from recall_lab.fake_servers.faults import FaultSpecError, parse_spec

    base = base or default_config()
    for spec in faults:
        try:
            domain, _rule = parse_spec(spec)
        except FaultSpecError as exc:
            raise ConfigError(f"fault {exc}") from None
        if domain not in {d.name for d in base.domains}:
            raise ConfigError(f"fault {spec!r} names {domain}, which is not a domain of the lab "
                              f"({', '.join(d.name for d in base.domains)})")
    domains: list[DomainConfig] = []
    for dc in base.domains:
        users = dict(dc.users)
        roles = ("sender", "organisation", "held") if dc.name == ORG else ("external",) if dc.name == EXTERNAL \
            else ()
        for role in roles:
            for k in range(slots):
                address = f"{cast_user(role, k)}@{dc.name}"
                users.setdefault(address, default_password(address))
        pols = dict(dc.policies)
        if dc.name == ORG:
            pols.update(policies)
            pols["recall_mode"] = mode
            pols.setdefault("recall_report_delay", TRIAL_REPORT_DELAY)
            held = [f"{cast_user('held', k)}@{ORG}" for k in range(slots)]
            pols["legal_hold"] = sorted(set(pols.get("legal_hold", [])) | set(held))
        domains.append(DomainConfig(name=dc.name, role=dc.role, users=users, policies=pols, pipeline=dc.pipeline,
                                    max_message_size=dc.max_message_size, backend=dc.backend))
    names = {d.name for d in domains}
    if ORG not in names or EXTERNAL not in names:
        raise ConfigError(f"the scenarios need the domains {ORG} and {EXTERNAL} in the lab config")
    return LabConfig(domains=domains, retry_delays=base.retry_delays, routes=dict(base.routes),
                     policy_modules=list(base.policy_modules))


async def run_matrix(options: MatrixOptions) -> MatrixResult:
    """Run the matrix; returns the result with every trial, sorted, and one transcript per scenario."""
    started = time.perf_counter()
    scenarios = sorted(options.scenarios, key=lambda s: (s.order, s.name))
    result = MatrixResult(seed=options.seed, trials_per_cell=options.trials, scenarios=list(scenarios),
                          modes=tuple(options.modes), realtime=options.realtime)
    groups = group_scenarios(scenarios, options.modes, options.cells)
    total = sum(len(g.scenarios) for g in groups) * len(_indexes(options))
    done = 0

    def finished(trial: TrialResult) -> None:
        nonlocal done
        result.add(trial)
        done += 1
        if options.progress is not None:
            options.progress(done, total)

    if options.progress is not None:
        options.progress(0, total)
    transcript_mode = options.transcript_mode or (options.modes[0] if options.modes else "cloud")
    _widen_default_executor(options.concurrency * len(groups))
    await asyncio.gather(*(
        _run_group(g, options, finished, result, transcript_mode, port_base=options.port_base if i == 0 else None,
                   web_port=options.web_port if i == 0 else None)
        for i, g in enumerate(groups)))
    result.sort()
    result.elapsed = time.perf_counter() - started
    return result


async def _run_group(group: Group, options: MatrixOptions, finished: Callable[[TrialResult], None],
                     result: MatrixResult, transcript_mode: str, port_base: int | None,
                     web_port: int | None = None) -> None:
    from recall_lab.harness.lab import Lab

    indexes = _indexes(options)
    concurrency = 1 if group.exclusive_clock else min(options.concurrency, len(indexes))
    slots_needed = concurrency * len(group.scenarios)
    recorder = GatedRecorder(max_literal=4096) if options.transcripts else None
    if recorder is not None and options.transcript_sink is not None:
        user_sink, mode = options.transcript_sink, group.mode
        recorder.sink = lambda line: user_sink(mode, line)
    config = lab_config(group.mode, group.policies, slots_needed, options.base_config, group.faults)
    shared = None
    if group.exclusive_clock:
        shared = WallClock(options.speed) if options.realtime else SimClock()
    # The trials' shared clock is the servers' clock from the start (retention ages Trash by it), passed in
    # when the lab is built, never patched into a running policy.
    server_clock = shared.now if shared is not None else time.monotonic
    web = {"web_port": web_port, "web_token": options.web_token} if web_port is not None else {}
    # a domain on Dovecot: its clients' changes are published at the engine's settle points (Lab.wait_idle)
    async with Lab(config, store="memory", transcripts=recorder, port_base=port_base, clock=server_clock,
                   watch_backends=options.realtime, **web) as lab:

        def clock_factory() -> SimClock:
            return WallClock(options.speed) if options.realtime else SimClock()

        engine = TrialEngine(lab, group.mode, clock_factory=clock_factory, shared_clock=shared,
                             observer=options.observer)
        per_scenario: list[tuple[Scenario, list]] = []
        try:
            slot_base = 0
            for s in group.scenarios:
                slots = [await engine.open_slot(slot_base + k, s) for k in range(concurrency)]
                slot_base += concurrency
                per_scenario.append((s, slots))
            # The first trial of each scenario alone, recorded, when transcripts are wanted.
            if recorder is not None:
                first = indexes[0]
                for s, slots in per_scenario:
                    recorder.capturing = True
                    trial = await engine.run(slots[0], s, plan_trial(s, trial_seed(options.seed, s.name, first)),
                                             first)
                    recorder.capturing = False
                    lines = recorder.take()
                    if group.mode == transcript_mode:
                        result.transcripts[s.name] = lines
                    finished(trial)
                indexes = indexes[1:]
            if group.exclusive_clock:  # one trial at a time: they share the clock the retention policy reads
                for s, slots in per_scenario:
                    await _deal(engine, s, slots, indexes, options, finished)
            else:
                await asyncio.gather(*(_deal(engine, s, slots, indexes, options, finished)
                                       for s, slots in per_scenario))
        finally:
            for _s, slots in per_scenario:
                for slot in slots:
                    await engine.close_slot(slot)
            engine.close()


def _indexes(options: MatrixOptions) -> list[int]:
    return sorted(set(options.only_trials)) if options.only_trials is not None else list(range(options.trials))


async def _deal(engine: TrialEngine, scenario: Scenario, slots: list, indexes: Sequence[int], options: MatrixOptions,
                finished: Callable[[TrialResult], None]) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in indexes:
        queue.put_nowait(i)

    async def worker(slot: Any) -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            plan = plan_trial(scenario, trial_seed(options.seed, scenario.name, i))
            finished(await engine.run(slot, scenario, plan, i))

    await asyncio.gather(*(worker(slot) for slot in slots))


def _widen_default_executor(concurrent_trials: int) -> None:
    """The recall agent runs its IMAP calls in worker threads (asyncio.to_thread); they mostly wait on the
    network, so with many trials side by side the loop's default pool of cpu+4 threads becomes the bottleneck."""
    import concurrent.futures

    workers = max(8, min(64, 2 * concurrent_trials))
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recall-lab-matrix"))


# --- several processes ----------------------------------------------------------------------------------------


def run_matrix_blocking(options: MatrixOptions) -> MatrixResult:
    """Run the matrix from synchronous code: in this process, or split over `options.workers` processes.

    Why processes: one event loop runs the servers and the clients of every trial, so a run is bound to one
    core; with W workers each process takes a share of the (scenario, mode) cells, starts labs of its own and
    reports its trials back. Trial seeds do not depend on who runs a trial, so the result is the same.
    The observer and the transcript sink cannot cross processes: a narrated run stays in one.
    """
    cells = [(s.name, m) for m in options.modes for s in options.scenarios if m in s.modes]
    workers = min(options.workers, len(cells))
    with _sigterm_raises():
        if workers <= 1 or options.observer is not None or options.transcript_sink is not None:
            return _run_serial(options)
        return _run_in_workers(options, cells, workers)


def _run_serial(options: MatrixOptions) -> MatrixResult:
    """asyncio.run(run_matrix(options)), except that Ctrl-C and SIGTERM cancel the run and the clean-up after
    them is bounded.

    Why not asyncio.run: after a cancelled run it waits, without a limit, for every task left in the loop, and a
    server connection task cut off mid-trial may never end; then the process ignores the signal. Here the run is
    cancelled (the labs close in their `finally`), leftovers get CLEANUP_S seconds, and the signal is raised as
    KeyboardInterrupt (exit 130) or Terminated (exit 143)."""
    loop = asyncio.new_event_loop()
    received: list[int] = []
    main = loop.create_task(run_matrix(options))

    def cancel_again() -> None:
        # The run's own clean-up (labs closing in `finally`) may await something a cut-off trial never
        # finishes; a cancel each CLEANUP_S seconds interrupts that wait, so an interrupted run always ends.
        if not main.done():
            main.cancel()
            loop.call_later(CLEANUP_S, cancel_again)

    def on_signal(signum: int) -> None:
        received.append(signum)
        # From here on, connections cut mid-handshake leave client tasks failing with nobody to read them
        # ("Task exception was never retrieved"): expected after a stop, so only the one-line message is shown.
        loop.set_exception_handler(lambda _loop, _context: None)
        main.cancel()
        loop.call_later(CLEANUP_S, cancel_again)

    watching = threading.current_thread() is threading.main_thread()
    if watching:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
    try:
        return loop.run_until_complete(main)
    except asyncio.CancelledError:
        if not received:
            raise
        if received[0] == signal.SIGTERM:
            raise Terminated("terminated") from None
        raise KeyboardInterrupt from None
    finally:
        try:
            leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in leftovers:
                t.cancel()
            if leftovers:
                _, stuck = loop.run_until_complete(asyncio.wait(leftovers, timeout=CLEANUP_S))
                if stuck:
                    _quiet_abandoned_coroutines()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(asyncio.wait([loop.create_task(loop.shutdown_default_executor())],
                                                 timeout=CLEANUP_S))
        finally:
            if watching:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(signum)
            loop.set_exception_handler(lambda _loop, _context: None)  # no "Task was destroyed" for leftovers
            loop.close()


#: Seconds the tasks left after a run (or an interrupted run) get to end.
CLEANUP_S = 2.0


def _quiet_abandoned_coroutines() -> None:
    """Tasks still running after CLEANUP_S are abandoned on purpose (the user asked the run to stop). When the
    closed loop is collected, the coroutines those tasks had created but not yet started (a `wait_for` argument,
    a clean-up step) each print "coroutine ... was never awaited" on stderr: noise after a one-line "interrupted",
    and nothing the user can act on. Only that warning is silenced, and only once a run was cut short."""
    warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited", category=RuntimeWarning)
    previous = sys.unraisablehook
    if getattr(previous, "recall_lab_quiet", False):
        return  # installed by an earlier interrupted run in this process: one hook, not a chain of them

    def hook(unraisable: Any) -> None:
        # The same abandoned coroutines, closed by the collector mid-`await`, may report "coroutine ignored
        # GeneratorExit" or a CancelledError with nobody to catch it; anything else still goes to the old hook.
        if inspect.iscoroutine(unraisable.object) and issubclass(
                unraisable.exc_type, (RuntimeError, GeneratorExit, asyncio.CancelledError)):
            return
        previous(unraisable)

    hook.recall_lab_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


class Terminated(Exception):
    """SIGTERM arrived (from `kill`, `timeout`, a CI runner): the run stops as after Ctrl-C, workers included."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While a run lasts, SIGTERM raises Terminated in the main thread, so the `finally` blocks run: the
    workers are terminated and the labs shut down instead of being orphaned (the default SIGTERM kills this
    process at once and leaves its worker processes running)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated("terminated")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_in_workers(options: MatrixOptions, cells: list[tuple[str, str]], workers: int) -> MatrixResult:
    import dataclasses
    import multiprocessing
    import queue as queue_module

    started = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    shares: list[list[tuple[str, str]]] = [[] for _ in range(workers)]
    for i, cell in enumerate(cells):  # the same scenario's modes go to different workers: even shares
        shares[i % workers].append(cell)
    transcript_mode = options.transcript_mode or (options.modes[0] if options.modes else "cloud")
    procs = []
    for w, share in enumerate(shares):
        sub = dataclasses.replace(options, cells=share, workers=1, progress=None, observer=None,
                                  transcript_sink=None, transcript_mode=transcript_mode,
                                  port_base=options.port_base if w == 0 else None,
                                  web_port=options.web_port if w == 0 else None)
        proc = ctx.Process(target=_worker_main, args=(sub, queue), name=f"recall-lab-matrix-{w}", daemon=True)
        proc.start()
        procs.append(proc)
    total = len(cells) * len(_indexes(options))
    result = MatrixResult(seed=options.seed, trials_per_cell=options.trials,
                          scenarios=sorted(options.scenarios, key=lambda s: (s.order, s.name)),
                          modes=tuple(options.modes), realtime=options.realtime)
    done, finished_workers, failure = 0, 0, None
    if options.progress is not None:
        options.progress(0, total)
    try:
        while finished_workers < len(procs):
            try:
                kind, payload = queue.get(timeout=1.0)
            except queue_module.Empty:
                # A worker that died without a word (killed, out of memory) would leave us waiting for ever.
                if all(not p.is_alive() for p in procs) and queue.empty():
                    codes = [p.exitcode for p in procs]
                    raise RuntimeError(f"matrix worker processes ended without their results (exit codes {codes})"
                                       ) from None
                continue
            if kind == "trial":
                done += 1
                if options.progress is not None:
                    options.progress(done, total)
            elif kind == "result":
                finished_workers += 1
                for t in payload["trials"]:
                    result.add(TrialResult.from_json(t))
                result.transcripts.update(payload["transcripts"])
            else:  # "error": an expected failure (a port in use) or a bug, re-raised here as it was
                finished_workers += 1
                failure = failure or payload
    except BaseException:
        # Ctrl-C, SIGTERM or a bug here: the workers would go on running trials nobody waits for, and a worker
        # whose queue feeder blocks on a full pipe would never end; stop them now.
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=3)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=3)
        raise
    for proc in procs:
        proc.join(timeout=30)
    if failure is not None:
        raise failure
    result.sort()
    result.elapsed = time.perf_counter() - started
    return result


def _worker_main(options: MatrixOptions, queue: Any) -> None:
    def progress(done: int, total: int) -> None:
        if done:
            queue.put(("trial", None))

    _exit_with_parent()
    try:
        options.progress = progress
        result = asyncio.run(run_matrix(options))
        queue.put(("result", {"trials": [t.to_json() for t in result.all_trials()],
                              "transcripts": result.transcripts}))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            queue.put(("error", exc))
        except Exception:  # noqa: BLE001 - unpicklable: send its text
            queue.put(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))


def _exit_with_parent() -> None:
    """End this worker when its parent process ends, however it ends (even SIGKILL, which runs no cleanup):
    a thread waits on the parent's sentinel and then exits the process, labs and all, at once."""
    import multiprocessing
    import multiprocessing.connection
    import os

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="recall-lab-parent-watch", daemon=True).start()


__all__ = ["Terminated", "CAST", "DEFAULT_CONCURRENCY", "MatrixOptions", "group_scenarios", "lab_config", "run_matrix",
           "run_matrix_blocking"]
