"""`recall-lab matrix`: the measured table for chosen scenarios and modes, as text, JSON and HTML.

    recall-lab matrix --trials 50 --seed 7
    recall-lab matrix --trials 200 --scenario web-client --scenario same-org-desktop --mode cloud \\
        --json out.json --html report.html

Expected failures (an unknown scenario or mode, a malformed scenario file or lab config, a port in use, an
unwritable output file) are one line on stderr and a non-zero exit, via CliError.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from recall_lab.harness.cli import EXIT_USAGE, CliError
from recall_lab.harness.scenarios.distributions import ScenarioError
from recall_lab.harness.scenarios.model import MODES, Scenario

DEFAULT_TRIALS = 20
#: --realtime (and demo --web): simulated seconds per real second, one value for demo and matrix. 90: a recall
#: ten simulated minutes after the send comes about 7 s after it, slow enough to follow on the console or in the
#: narration, and the demo's whole walk stays under 4 minutes (docs/console.md).
DEFAULT_SPEED = 90.0
DEFAULT_CONCURRENCY = 2  # recall_lab.harness.matrix.DEFAULT_CONCURRENCY (not imported here: it would load the lab early)
#: Show a progress bar from this many trials on (a short run is over before a bar is worth drawing).
PROGRESS_FROM = 100
#: Split a run over two processes from this many trials on (see auto_workers).
AUTO_WORKERS_FROM = 200


def output_console() -> Console:
    """stdout; when it is not a terminal (a file, a pipe, a test), nothing wrapped (log_output.output_console)."""
    from recall_lab.harness.commands.log_output import output_console as console_for_output

    return console_for_output()


def resolve_scenarios(names: Sequence[str] | None) -> list[Scenario]:
    """Built-in scenarios by name or TOML files by path; all built-ins when none is named."""
    from recall_lab.harness.scenarios.catalogue import builtin_scenarios, find_scenario

    try:
        if not names:
            return builtin_scenarios()
        chosen: dict[str, Scenario] = {}
        for name in names:
            s = find_scenario(name)
            chosen.setdefault(s.name, s)
        return list(chosen.values())
    except ScenarioError as exc:
        raise CliError(str(exc), code=EXIT_USAGE) from None


def resolve_modes(modes: Sequence[str] | None) -> tuple[str, ...]:
    if not modes:
        return MODES
    out: list[str] = []
    for m in modes:
        m = m.strip().lower()
        if m not in MODES:
            raise CliError(f"unknown recall mode {m!r} (known: {', '.join(MODES)})", code=EXIT_USAGE)
        if m not in out:
            out.append(m)
    return tuple(sorted(out, key=MODES.index))


def load_base_config(path: Path | None) -> Any:
    if path is None:
        return None
    from recall_lab.harness.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        raise CliError(str(exc), code=EXIT_USAGE) from None


@contextlib.contextmanager
def progress_bar(total_hint: int, enabled: bool, console: Console) -> Iterator[Any]:
    """A rich progress bar on stderr for long runs; yields a `progress(done, total)` callback or None.

    The bar (and its refresh thread) starts at the first call, after any worker processes were started."""
    if not enabled or total_hint < PROGRESS_FROM or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                   transient=True)
    task = bar.add_task("trials", total=total_hint)
    started = False

    def update(done: int, total: int) -> None:
        nonlocal started
        if not started:
            bar.start()
            started = True
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if started:
            bar.stop()


def progress_lines(bar: Any, every: int) -> Any:
    """The progress callback: the bar's, plus a plain stderr line every `every` trials (0: none)."""
    if every <= 0:
        return bar

    def update(done: int, total: int) -> None:
        if bar is not None:
            bar(done, total)
        if done and (done % every == 0 or done == total):
            print(f"trials {done}/{total}", file=sys.stderr, flush=True)

    return update


def auto_workers(total_trials: int) -> int:
    """Processes for a run: two on a multi-core machine once a run is long enough to repay starting them."""
    return 2 if (os.cpu_count() or 1) >= 2 and total_trials >= AUTO_WORKERS_FROM else 1


def run_matrix_sync(options: Any) -> Any:
    """Run the matrix in a fresh event loop, turning the lab's expected failures into CliError."""
    from recall_lab.harness.config import ConfigError
    from recall_lab.harness.lab import LabStartError
    from recall_lab.harness.matrix import Terminated, run_matrix_blocking

    try:
        return run_matrix_blocking(options)
    except Terminated:
        raise CliError("terminated", code=143) from None
    except (LabStartError, ConfigError, ScenarioError) as exc:
        raise CliError(str(exc), code=EXIT_USAGE) from None
    except ValueError as exc:  # a policy refusing its settings when the lab starts (policies.* in the config)
        raise CliError(f"bad lab configuration: {exc}", code=EXIT_USAGE) from None
    except OSError as exc:
        raise CliError(f"cannot start the lab: {exc.strerror or exc}", code=EXIT_USAGE) from None


def make_options(scenarios: list[Scenario], trials: int, seed: str, modes: tuple[str, ...], concurrency: int,
                 realtime: bool, speed: float, config: Any, port_base: int | None, **extra: Any) -> Any:
    from recall_lab.harness.matrix import MatrixOptions

    if extra.get("workers") is not None and extra["workers"] < 1:
        raise CliError("--workers must be at least 1", code=EXIT_USAGE)
    if extra.get("workers") is None:
        extra["workers"] = auto_workers(trials * sum(len([m for m in modes if m in s.modes]) for s in scenarios))
    if trials < 1:
        raise CliError("--trials must be at least 1", code=EXIT_USAGE)
    if concurrency < 1:
        raise CliError("--concurrency must be at least 1", code=EXIT_USAGE)
    if speed <= 0:
        raise CliError("--speed must be positive", code=EXIT_USAGE)
    if port_base is not None and not 0 < port_base < 65500:
        raise CliError("--port-base must be between 1 and 65499", code=EXIT_USAGE)
    seed_value: int | str = int(seed) if seed.lstrip("-").isdigit() else seed
    try:
        return MatrixOptions(scenarios=scenarios, trials=trials, seed=seed_value, modes=modes,
                             concurrency=concurrency, realtime=realtime, speed=speed, base_config=config,
                             port_base=port_base, **extra)
    except ValueError as exc:
        raise CliError(str(exc), code=EXIT_USAGE) from None


def check_outputs(json_path: Path | None, html_path: Path | None = None) -> None:
    """Refuse what would fail after the trials, before running them: an output file whose folder does not
    exist, or `--html` in an install without matplotlib (the `report` extra draws the report's plot)."""
    for path in (json_path, html_path):
        if path is not None and not path.parent.is_dir():
            raise CliError(f"cannot write {path}: no folder {path.parent}", code=EXIT_USAGE)
    if html_path is not None:
        from recall_lab.harness.report.plot import MISSING_MATPLOTLIB, plot_available

        if not plot_available():
            raise CliError(MISSING_MATPLOTLIB, code=EXIT_USAGE)


def write_outputs(result: Any, json_path: Path | None, html_path: Path | None, sweep: Any = None) -> list[str]:
    from recall_lab.harness.report.html_report import write_html
    from recall_lab.harness.report.json_report import write_json
    from recall_lab.harness.report.plot import ReportUnavailable

    written = []
    try:
        if json_path is not None:
            written.append(str(write_json(result, json_path, sweep=sweep)))
        if html_path is not None:
            written.append(str(write_html(result, html_path, sweep=sweep)))
    except OSError as exc:
        raise CliError(f"cannot write {exc.filename}: {exc.strerror or exc}") from None
    except ReportUnavailable as exc:  # matplotlib broke after check_outputs found it importable
        raise CliError(str(exc)) from None
    return written


def explain_scenarios(scenarios: Sequence[Scenario]) -> str:
    """Every distribution of each scenario with its source (`matrix --explain`): what the table rests on."""
    from recall_lab.harness.scenarios.model import _DIST_FIELDS

    lines = []
    for s in scenarios:
        lines.append(f"{s.name}: {s.condition}")
        for key in _DIST_FIELDS:
            dist = getattr(s, key)
            if dist is None or (key != "open_delay" and dist.kind == "never" and not dist.source) or (
                    key in ("offline_for", "purge_lag") and dist.kind == "fixed" and not dist.source):
                continue
            lines.append(f"  {key}: {dist.describe()}")
            lines.append(f"    source: {dist.source or 'none given (a scenario built in Python)'}")
        if s.delayed_send is not None:
            lines.append(f"  delayed_send: {s.delayed_send:g} s (the product's window; see docs/modelling.md)")
    lines.append("Every choice and its source: docs/modelling.md; the sources: docs/recall-sources.md.")
    return "\n".join(lines)


def sweep_plan(scenarios: list[Scenario], text: str | None) -> Any:
    """The `--sweep` option as a SweepPlan (None without it); CliError when malformed."""
    if text is None:
        return None
    from recall_lab.harness.scenarios.sweep import SweepPlan, parse_sweep

    try:
        _parameter, delays = parse_sweep(text)
    except ScenarioError as exc:
        raise CliError(str(exc), code=EXIT_USAGE) from None
    return SweepPlan(tuple(scenarios), delays)


def render_sweep(sweep: Any) -> Any:
    """The sweep as a rich table: a row per condition and mode, a column per recall delay."""
    from rich.table import Table

    from recall_lab.harness.report.plot import delay_label

    table = Table(title=f"Success against a fixed recall delay ({sweep.trials_per_point} trials per point; "
                        "rate [95% Wilson interval])", title_justify="left", header_style="bold")
    table.add_column("Condition", overflow="fold", min_width=24)
    table.add_column("mode")
    for d in sweep.plan.delays:
        table.add_column(delay_label(d), justify="right", no_wrap=True)
    for s in sweep.plan.scenarios:
        for mode in sweep.modes:
            points = {p.delay: p for p in sweep.curves.get((s.name, mode), [])}
            if points:
                table.add_row(s.condition, mode, *[points[d].rate.text() if d in points else "-"
                                                   for d in sweep.plan.delays])
    return table


def with_backends(base: Any, choices: Sequence[str]) -> Any:
    """The base config (default: the built-in lab) with `--backend DOMAIN=KIND` applied; usage errors exit 2."""
    if not choices:
        return base
    from recall_lab.harness.config import ConfigError, default_config, parse_backend_options

    config = base if base is not None else default_config()
    try:
        config.set_backends(parse_backend_options(choices))
    except ConfigError as exc:
        raise CliError(str(exc), code=EXIT_USAGE) from None
    return config


def compare_runs(out: Console, base: Any, *, runs: list[Scenario], trials: int, seed: str,
                 modes: tuple[str, ...], concurrency: int, workers: int | None, quiet: bool,
                 json_path: Path | None, html_path: Path | None, sweep: str | None, realtime: bool) -> None:
    """`--compare-backends`: the matrix on the lab's own servers, then on the chosen backends, same seed."""
    import copy
    import json

    from recall_lab.harness.report.backend_compare import (
        compare_results,
        comparison_json,
        comparison_notes,
        render_comparison,
    )

    if base is None or all(d.backend == "lab" for d in base.domains):
        raise CliError("--compare-backends needs --backend DOMAIN=dovecot (or a config with a backend)",
                       code=EXIT_USAGE)
    if sweep is not None or html_path is not None or realtime:
        raise CliError("--compare-backends takes --json only (not --sweep, --html or --realtime)", code=EXIT_USAGE)
    own = copy.deepcopy(base)
    for domain in own.domains:
        domain.backend = "lab"
    chosen = ", ".join(f"{d.name}={d.backend}" for d in base.domains if d.backend != "lab")
    second_name = "/".join(sorted({d.backend for d in base.domains if d.backend != "lab"}))
    results = []
    for config in (own, base):
        options = make_options(runs, trials, seed, modes, concurrency, False, DEFAULT_SPEED, config, None,
                               workers=workers)
        results.append(run_matrix_sync(options))
    comparison = compare_results(results[0], results[1], "lab", second_name)
    if json_path is not None:
        json_path.write_text(json.dumps(comparison_json(comparison), indent=1))
    if not quiet:
        out.print(render_comparison(comparison))
        out.print(f"backends: {chosen}; seed {results[0].seed}, {trials} trials per row and mode",
                  highlight=False, markup=False)
        for line in comparison_notes(comparison):
            out.print(line, highlight=False, markup=False, soft_wrap=True)
        if json_path is not None:
            out.print(f"wrote {json_path}", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("matrix")
    def matrix(
        trials: Annotated[int, typer.Option("--trials", "-n", help="Trials per scenario and mode.")] = DEFAULT_TRIALS,
        seed: Annotated[str, typer.Option("--seed", "-s", help="Seed of the run: same seed, same trials.")] = "1",
        scenario: Annotated[list[str] | None, typer.Option("--scenario",
                                           help="A built-in scenario name or a TOML file (repeatable; "
                                                "default: all).")] = None,
        mode: Annotated[list[str] | None, typer.Option("--mode", help="cloud or legacy (repeatable; default: both).")] = None,
        json_path: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON to FILE.")] = None,
        html_path: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML report to FILE.")] = None,
        concurrency: Annotated[int, typer.Option("--concurrency", "-c",
                                        help="Concurrent recipients per scenario and mode.")] = DEFAULT_CONCURRENCY,
        realtime: Annotated[bool, typer.Option("--realtime", help="Run events on the wall clock.")] = False,
        speed: Annotated[float, typer.Option("--speed", help="With --realtime: simulated seconds per real second "
                                             "(as in demo: a simulated minute and a half each second, slow enough "
                                             "to follow).")] = DEFAULT_SPEED,
        config: Annotated[Path | None, typer.Option("--config", help="Base lab config (TOML) to build the labs from.")] = None,
        port_base: Annotated[int | None, typer.Option("--port-base", help="Listen on fixed ports (first lab).")] = None,
        workers: Annotated[int | None, typer.Option("--workers", "-w",
                                                    help="Processes (default: 2 for long runs on 2+ cores).")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no table.")] = False,
        progress_every: Annotated[int, typer.Option("--progress-every", help="Print `trials DONE/TOTAL` to stderr "
                                                    "every N trials (for logs, where no bar is drawn).")] = 0,
        list_: Annotated[bool, typer.Option("--list", help="List the built-in scenarios and exit.")] = False,
        explain: Annotated[bool, typer.Option("--explain", help="Print every distribution of the chosen scenarios "
                                              "with its source, and exit.")] = False,
        sweep: Annotated[str | None, typer.Option("--sweep", help="Also run each condition with the recall at "
                                                  "fixed delays: recall-delay=30,120,600,1800,3600 (s, m, h).")
                         ] = None,
        backend: Annotated[list[str] | None, typer.Option(
            "--backend", metavar="DOMAIN=KIND",
            help="Who keeps a domain's mail in every lab: lab or dovecot (repeatable; docs/dovecot-backend.md).")
        ] = None,
        compare_backends: Annotated[bool, typer.Option(
            "--compare-backends", help="Run twice with the same seed, every domain on the lab's own server, then "
                                       "as --backend says; print the two side by side with each difference.")
        ] = False,
    ) -> None:
        """Run N trials of each scenario in each recall mode over the real servers; print the table."""
        from recall_lab.harness.report.table import (
            LEGEND,
            render_table,
            residue_notes,
            settle_notes,
            table_notes,
        )

        out = output_console()
        if list_:
            for s in resolve_scenarios(None):
                out.print(f"{s.name:20} {s.condition}", highlight=False, soft_wrap=True)
            return
        chosen = resolve_scenarios(scenario)
        if explain:
            out.print(explain_scenarios(chosen), highlight=False, soft_wrap=True, markup=False)
            return
        modes = resolve_modes(mode)
        plan = sweep_plan(chosen, sweep)
        runs = chosen + (plan.points() if plan is not None else [])
        check_outputs(json_path, html_path)
        base = with_backends(load_base_config(config), backend or [])
        if compare_backends:
            compare_runs(out, base, runs=chosen, trials=trials, seed=seed, modes=modes, concurrency=concurrency,
                         workers=workers, quiet=quiet, json_path=json_path, html_path=html_path,
                         sweep=sweep, realtime=realtime)
            return
        err = Console(stderr=True)
        hint = trials * sum(len([m for m in modes if m in s.modes]) for s in runs)
        with progress_bar(hint, not quiet, err) as progress:
            options = make_options(runs, trials, seed, modes, concurrency, realtime, speed, base, port_base,
                                   progress=progress_lines(progress, progress_every), workers=workers)
            result = run_matrix_sync(options)
        swept = None
        if plan is not None:
            from recall_lab.harness.scenarios.sweep import split_result

            result, swept = split_result(result, plan)
        written = write_outputs(result, json_path, html_path, sweep=swept)
        if not quiet:
            from recall_lab.harness.scenarios.sweep import recall_delay_note

            common, note = recall_delay_note(result.scenarios)
            out.print(render_table(result, title="Likelihood of a successful recall (measured; recall delay "
                                                 f"{common} unless noted below)"))
            for line in table_notes(result):
                out.print(line, highlight=False, markup=False)
            leftovers = residue_notes(result)
            if leftovers:
                out.print('What "recalled" leaves behind (trials of each mode):', highlight=False, markup=False)
                for line in leftovers:
                    out.print(f"  {line}", highlight=False, markup=False)
            out.print(LEGEND, highlight=False)
            for line in settle_notes(result):
                out.print(f"  unsettled: {line}", highlight=False, markup=False)
            out.print(note, highlight=False, markup=False)
            if swept is not None:
                out.print(render_sweep(swept))
            rate = result.trial_count / result.elapsed if result.elapsed else 0.0
            out.print(f"{result.trial_count} trials in {result.elapsed:.1f} s ({rate:.0f} trials/s), "
                      f"seed {result.seed}", highlight=False)
            errors = [t for t in result.all_trials() if t.error]
            if errors:
                out.print(f"[yellow]{len(errors)} trial(s) hit an error (counted as failed); first: "
                          f"{errors[0].scenario}/{errors[0].mode} #{errors[0].index}: {errors[0].error}[/]")
            for path in written:
                out.print(f"wrote {path}", highlight=False)
