"""`recall-lab demo`: the teaching demo, and the README's first command.

With no arguments it starts the default lab (corp.example with alice, bob, carol; mail.example with dave), walks
one message and its recall through each condition of the article's table (and the extra ones) with a short
narration and the protocol lines that matter, then measures every condition over many trials and ends with the
table in the article's form.

Why the walk shows so few protocol lines: a whole trial is a few hundred lines of SMTP and IMAP; what explains
the outcome is a handful of them (the original's Message-ID, the recall that names it, the EXPUNGE or VANISHED
the desktop client receives, the plain "would like to recall" text an outside provider delivers). The full
transcript of each condition is in the HTML report (`recall-lab matrix --html FILE`).

Time budget: under 30 s on a 2-core machine at the default trial count, measured by scripts/bench_demo.py (a
benchmark, not a test: a loaded machine is slow for reasons that are not bugs).

`--web` is the same walk for a class watching the lab console (docs/console.md): the console URL is printed
first; the narrated lab of every condition serves its console on that one port with one token, so the page
the teacher opened follows each condition (it reloads itself when a new lab says hello); the walk runs on the
wall clock at DEFAULT_SPEED simulated seconds per real second (as `--realtime` and `matrix --realtime` do) and
pauses WEB_PAUSE seconds between conditions.
At these defaults the walk of the ten conditions took 227 s (the offline-desktop condition, two simulated
hours, is 93 s of it) and the whole demo --web 237 s (seed 1, 2 cores).
"""

from __future__ import annotations

import re
import secrets
import socket
import time
from collections import defaultdict
from dataclasses import dataclass
from email import policy as email_policy
from email.parser import BytesParser
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from recall_lab.harness.cli import EXIT_USAGE, CliError
from recall_lab.harness.commands.log_output import output_console as _console
from recall_lab.harness.commands.matrix import (
    DEFAULT_SPEED,
    check_outputs,
    load_base_config,
    make_options,
    output_console,
    progress_bar,
    resolve_scenarios,
    run_matrix_sync,
    write_outputs,
)

DEFAULT_DEMO_TRIALS = 20
#: --web: seconds between conditions (the console shows the last state, then the next lab's).
WEB_PAUSE = 4.0

#: Protocol lines worth showing, with what each one proves.
KEY_LINES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^Message-ID: <trial\."), "the original's Message-ID"),
    (re.compile(r"^Subject: Recall: "), "the recall instruction"),
    (re.compile(r"^X-Recall-Message-ID: "), "it names the original"),
    (re.compile(r"^\* \d+ EXPUNGE$"), "pushed to the IMAP session that has the folder open"),
    (re.compile(r"^\* VANISHED "), "pushed to the IMAP session that has the folder open (QRESYNC)"),
    (re.compile(r"^Subject: Recall (Success|Failure): "), "the recipient's client reports back"),
    (re.compile(r"^X-Recall-Status: "), "what the client did"),
    (re.compile(r"^Subject: Message Recall Report: "), "the sender's report"),
    (re.compile(r"^\S+@\S+: (recalled|recalled-after-read|failed-\w+|not-found|held|external|pending)"),
     "a line of the report"),
)
_RECALL_TEXT = re.compile(r"would like to recall the message")


def _fmt_t(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _key_lines(lines: list[Any], seen: set[str]) -> list[str]:
    """The lines of `lines` (TranscriptLine) that matter, each text once per trial."""
    out = []
    for line in lines:
        text = line.text.strip()
        if text.endswith("="):  # a quoted-printable soft line break: the line goes on in the next one
            text = text[:-1] + "..."
        for pattern, why in KEY_LINES:
            if pattern.search(text) and text not in seen:
                seen.add(text)
                out.append(f"{line.session} {line.direction}: {text}   <- {why}")
                break
    return out


class Narrator:
    """Prints one mode's trial live (observer + transcript sink) and remembers the other mode's outcome."""

    def __init__(self, console: Console, live_mode: str = "cloud") -> None:
        self.console = console
        self.live_mode = live_mode
        self.pending: dict[str, list[Any]] = defaultdict(list)
        self.seen: dict[str, set[str]] = defaultdict(set)
        self.summary: dict[str, dict[str, Any]] = {}
        self.quiet_lines: dict[str, list[str]] = defaultdict(list)  # key lines of the modes not narrated live

    def sink(self, mode: str, line: Any) -> None:
        self.pending[mode].append(line)

    def observe(self, ctx: Any, event: Any, notes: list[str]) -> None:
        from recall_lab.harness.scenarios.timeline import EventKind

        lines, self.pending[ctx.mode] = self.pending[ctx.mode], []
        key = _key_lines(lines, self.seen[ctx.mode])
        extra = self._external_view(ctx, event)
        if event.kind is EventKind.OBSERVE:
            self.summary[ctx.mode] = {"verdict": ctx.outcome.get("verdict", "?"), "report": ctx.report_status,
                                      "explain": ctx.outcome.get("explain", "")}
        if ctx.mode != self.live_mode:
            self.quiet_lines[ctx.mode] += [line for line in key if "Recall Success" in line or "Recall Failure" in line
                                           or "X-Recall-Status" in line]
            return
        c = self.console
        first, *rest = notes or [event.kind.value]
        stamp = f"t={_fmt_t(event.at)}".ljust(9)
        c.print(f"  [cyan]{stamp}[/] [bold]{escape(event.kind.value).ljust(12)}[/]{escape(first)}", highlight=False)
        pad = " " * 22
        for note in rest + extra:
            c.print(f"{pad}{escape(note)}", highlight=False)
        for line in key:
            c.print(f"{pad}[dim]{escape(line)}[/]", highlight=False)

    def _external_view(self, ctx: Any, event: Any) -> list[str]:
        """At an outside provider the recall is just mail: show what the recipient's client shows."""
        from recall_lab.harness.scenarios.timeline import EventKind

        desktop = ctx.slot.desktop
        if event.kind is not EventKind.RECALL or ctx.scenario.recipient != "external" or desktop is None:
            return []
        found = desktop.cache.find(ctx.recall_message_id) if ctx.recall_message_id else []
        if not found:
            return []
        msg = BytesParser(policy=email_policy.default).parsebytes(found[0].raw)
        body = msg.get_body(preferencelist=("plain",))
        text = " ".join(str(body.get_content()).split()) if body is not None else ""
        out = [f"at {ctx.slot.recipient_domain}, {ctx.slot.recipient}'s client shows an ordinary message: "
               f"Subject: {msg['Subject']}"]
        if _RECALL_TEXT.search(text):
            out.append(f'body: "{text}"   <- all an outside provider can do with a recall')
        return out


@dataclass(frozen=True)
class WebOptions:
    """Where every condition's narrated lab serves its console (demo --web): one port, one token."""

    port: int
    token: str

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"


def web_port(wanted: int | None) -> int:
    """`wanted` if it can be listened on, else a CliError; None: a free port chosen by the system."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server binds
        try:
            probe.bind(("127.0.0.1", wanted or 0))
        except OSError as exc:
            raise CliError(f"cannot use port {wanted} for the console: {exc.strerror or exc}",
                           code=EXIT_USAGE) from None
        return int(probe.getsockname()[1])


def walk(scenarios: list[Any], console: Console, seed: str, realtime: bool, speed: float, base: Any,
         web: WebOptions | None = None, pause: float = 0.0) -> None:
    """One message and its recall through each condition, narrated (cloud live, legacy summarised); with `web`
    the narrated lab serves the console there; `pause` seconds between conditions."""
    for number, s in enumerate(scenarios, start=1):
        if number > 1 and pause > 0:
            console.print(f"[dim](next condition in {pause:g} s)[/]", highlight=False)
            time.sleep(pause)  # pacing for the people watching, not a wait for anything
        console.rule(f"[bold]{number}. {escape(s.condition)}[/]", align="left")
        if s.narration:
            console.print(escape(s.narration), highlight=False)
        console.print(f"[dim]{escape(s.summary)}[/]", highlight=False)
        live = "cloud" if "cloud" in s.modes else s.modes[0]
        narrator = Narrator(console, live)
        console.print(f"[bold]{live} recall[/], trial {s.demo_trial} of seed {seed}:", highlight=False)
        web_options = {"web_port": web.port, "web_token": web.token} if web is not None else {}
        # the narrated mode first: the matrix serves the first group's lab on the console's port
        modes = (live, *[m for m in s.modes if m != live])
        options = make_options([s], s.demo_trial + 1, seed, modes, 1, realtime, speed, base, None,
                               observer=narrator.observe, transcript_sink=narrator.sink, transcripts=True,
                               only_trials=(s.demo_trial,), **web_options)
        run_matrix_sync(options)
        for mode in s.modes:
            got = narrator.summary.get(mode)
            if got is None:
                continue
            report = f", report: {got['report']}" if got["report"] else ""
            colour = {"recalled": "green", "partial": "yellow"}.get(got["verdict"], "red")
            console.print(f"  => {mode:6}: [{colour}]{escape(got['verdict'])}[/]{escape(report)}"
                          f"  [dim]{escape(got['explain'])}[/]", highlight=False)
            for line in narrator.quiet_lines.get(mode, []):
                console.print(f"{'':14}[dim]{escape(line)}[/]", highlight=False)
        console.print()


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        trials: Annotated[int, typer.Option("--trials", "-n",
                                   help="Trials per condition and mode for the table.")] = DEFAULT_DEMO_TRIALS,
        seed: Annotated[str, typer.Option("--seed", "-s", help="Seed: the same seed gives the same story.")] = "1",
        scenario: Annotated[list[str] | None, typer.Option("--scenario", help="Only these conditions (repeatable).")] = None,
        realtime: Annotated[bool, typer.Option("--realtime",
                                      help="Walk the conditions on the wall clock (see --speed).")] = False,
        speed: Annotated[float, typer.Option("--speed", help="With --realtime or --web: simulated seconds per real "
                                             "second (as in matrix: a simulated minute and a half each second, slow "
                                             "enough to follow).")] = DEFAULT_SPEED,
        web: Annotated[bool, typer.Option("--web", help="Show the walk on the lab console: print its URL, run on "
                                          "the wall clock, pause between conditions.")] = False,
        web_port_option: Annotated[int | None, typer.Option("--web-port", help="With --web: the console's port "
                                                            "(default: a free one).")] = None,
        pause: Annotated[float | None, typer.Option("--pause", help="Seconds between conditions "
                                                    f"(default {WEB_PAUSE:g} with --web, else 0).")] = None,
        no_walk: Annotated[bool, typer.Option("--no-walk", help="Skip the narrated walk; only the table.")] = False,
        no_table: Annotated[bool, typer.Option("--no-table", help="Skip the measured table.")] = False,
        markdown: Annotated[bool, typer.Option("--markdown", help="Print the table and its footnotes as Markdown "
                                               "on stdout, everything else on stderr (the README's table).")] = False,
        html_path: Annotated[Path | None, typer.Option("--html", help="Also write the HTML report to FILE.")] = None,
        json_path: Annotated[Path | None, typer.Option("--json", help="Also write the JSON result to FILE.")] = None,
        config: Annotated[Path | None, typer.Option("--config", help="Base lab config (TOML).")] = None,
    ) -> None:
        """Walk one message and its recall through each condition, then measure the table."""
        from recall_lab.harness.report.table import (
            LEGEND,
            render_table,
            residue_notes,
            settle_notes,
            table_markdown,
            table_notes,
        )

        started = time.perf_counter()
        console = output_console() if not markdown else _console(stderr=True)
        if pause is not None and pause < 0:
            raise CliError("--pause must not be negative", code=EXIT_USAGE)
        if web_port_option is not None and not web:
            raise CliError("--web-port needs --web", code=EXIT_USAGE)
        if web_port_option is not None and not 0 < web_port_option < 65536:
            raise CliError("--web-port must be between 1 and 65535", code=EXIT_USAGE)
        realtime = realtime or web
        chosen = resolve_scenarios(scenario)
        if not scenario:  # rows marked `demo = false` are measured by `recall-lab matrix` only
            chosen = [s for s in chosen if s.demo]
        check_outputs(json_path, html_path)
        base = load_base_config(config)
        make_options(chosen, trials, seed, ("cloud", "legacy"), 1, realtime, speed, base, None)  # validate
        console.print("[bold]recall-lab demo[/]: Alice (alice@corp.example) sends a message by mistake and "
                      "recalls it.\nThe lab runs real SMTP and IMAP servers for corp.example (Alice's "
                      "organisation: bob, carol) and mail.example (another provider: dave).\nCloud recall: "
                      "the organisation's server deletes the original. Legacy recall: the recipient's desktop "
                      "client must do it.\n", highlight=False)
        web_options = None
        if web and not no_walk:
            web_options = WebOptions(port=web_port(web_port_option), token=secrets.token_urlsafe(24))
            console.print(f"[bold]Lab console[/]: {web_options.console_url}\n(open it in a browser and leave it "
                          "open: it follows every condition's lab)\n", highlight=False, soft_wrap=True)
        if not no_walk:
            walk(chosen, console, seed, realtime, speed, base, web_options,
                 pause=pause if pause is not None else WEB_PAUSE if web else 0.0)
        if no_table:
            return
        console.rule("[bold]The table, measured[/]", align="left")
        console.print(f"{trials} trials per condition and mode over the real servers (simulated time, "
                      f"seed {seed}) ...", highlight=False)
        err = Console(stderr=True)
        hint = trials * sum(len(s.modes) for s in chosen)
        with progress_bar(hint, True, err) as progress:
            options = make_options(chosen, trials, seed, ("cloud", "legacy"), 2, False, speed, base, None,
                                   progress=progress, transcripts=html_path is not None)
            result = run_matrix_sync(options)
        written = write_outputs(result, json_path, html_path)
        if markdown:
            typer.echo(table_markdown(result), nl=False)
        else:
            console.print(render_table(result, title="Likelihood of a successful recall (measured)"))
            for note in table_notes(result):
                console.print(note, highlight=False, markup=False)
            leftovers = residue_notes(result)
            if leftovers:
                console.print("What \"recalled\" leaves behind (trials of each mode):", highlight=False,
                              markup=False)
                for line in leftovers:
                    console.print(f"  {line}", highlight=False, markup=False)
        console.print(LEGEND, highlight=False)
        from recall_lab.harness.scenarios.sweep import recall_delay_note

        console.print(recall_delay_note(result.scenarios)[1], highlight=False, markup=False)
        unsettled = settle_notes(result)
        if unsettled:
            console.print(f"Ranges: at {trials} trials these intervals straddle a threshold; trials per cell that "
                          "would settle each, if its rate held:", highlight=False)
            for line in unsettled:
                console.print(f"  {line}", highlight=False, markup=False)
        errors = [t for t in result.all_trials() if t.error]
        if errors:
            console.print(f"[yellow]{len(errors)} trial(s) hit an error (counted as failed); first: "
                          f"{errors[0].scenario}/{errors[0].mode}: {escape(errors[0].error)}[/]")
        console.print(f"{result.trial_count} trials in {result.elapsed:.1f} s; demo took "
                      f"{time.perf_counter() - started:.1f} s.", highlight=False)
        for path in written:
            console.print(f"wrote {path}", highlight=False)
