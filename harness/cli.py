"""The `recall-lab` command: a typer app whose subcommands live in `recall_lab.harness.commands.*`.

Why this shape: each subcommand (serve, send, recall, demo, matrix) belongs to the part of the lab it drives
and is written there; this module only assembles them and turns expected failures into one line on stderr
and a non-zero exit, never a traceback.

It also makes the help read as a person expects, for every command at once: typer renders each option's Python
type (`<list[str]>`, `<bool>` after a flag, `<path>`); `ReadableGroup` gives every option without a metavar of
its own a word instead (FILE, DIR, N, PORT, SECONDS, ADDRESS, NAME, TEXT; nothing after a flag). Required options
keep typer's `*` and `[required]`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any, get_args, get_origin

import typer
from typer.core import TyperGroup

#: Modules under recall_lab.harness.commands; each defines `register(app: typer.Typer) -> None`.
COMMAND_MODULES = ("serve", "send", "recall", "demo", "matrix")


#: Exit statuses, the same for the same kind of error in every command: what stops a command from starting (a
#: bad option value, config, scenario or input file, a port in use) is EXIT_USAGE, as click's own usage errors
#: are; a run that started and then failed (a refused message, a recall that did not finish, an output file that
#: could not be written) is EXIT_FAILED. Ctrl-C is 130, SIGTERM 143.
EXIT_FAILED = 1
EXIT_USAGE = 2


class CliError(Exception):
    """An expected failure: printed as one line `recall-lab: <message>`, exit status `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


#: Metavars by option name (the long one, without its dashes), where the type alone says too little (a `str` may be an address or a name).
METAVARS_BY_NAME = {
    "from": "ADDRESS", "to": "ADDRESS", "cc": "ADDRESS", "bcc": "ADDRESS", "user": "ADDRESS",
    "host": "HOST", "advertise-host": "HOST", "message-id": "MESSAGE-ID", "scenario": "NAME", "mode": "MODE",
    "store": "STORE", "seed": "SEED", "sweep": "SPEC", "web-token": "TOKEN", "speed": "N",
}
#: Words in a float option's name that make it a number of seconds.
SECONDS_WORDS = ("timeout", "delay", "wait", "pause")


def readable_metavar(param: Any) -> str | None:
    """The word `--help` shows after an option (None: leave typer's rendering)."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    desc = getattr(param, "type_descriptor", None)
    if desc is None:
        return None
    longs = [o for o in getattr(param, "opts", ()) if o.startswith("--")]
    name = longs[0][2:] if longs else str(param.name or "")
    if desc.is_choice and desc.choices:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
    if name in METAVARS_BY_NAME:
        return METAVARS_BY_NAME[name]
    if desc.is_path:
        return "DIR" if name.endswith("dir") else "FILE"
    annotation = desc.annotation
    if get_origin(annotation) is list and get_args(annotation):
        annotation = get_args(annotation)[0]
    if annotation is bool:
        return ""
    if annotation is int:
        return "PORT" if "port" in name else "N"
    if annotation is float:
        return "SECONDS" if any(w in name for w in SECONDS_WORDS) else "N"
    return "TEXT"


def make_readable(params: list[Any]) -> None:
    """Give every parameter without a metavar of its own the word `readable_metavar` picks."""
    for param in params:
        if param.metavar is None:
            metavar = readable_metavar(param)
            if metavar is not None:
                param.metavar = metavar


class ReadableGroup(TyperGroup):
    """The `recall-lab` group: its options and each command's (--help included) get readable metavars."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        make_readable(params)
        return params

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            make_readable(command.get_params(ctx))
        return command


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("recall-lab")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="recall-lab",
        help="A real IMAP/SMTP lab that shows why recalling an email works, half works, or cannot work.",
        no_args_is_help=True,
        add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
        pretty_exceptions_enable=False,
        cls=ReadableGroup,
    )

    def show_version(value: bool) -> None:
        if value:
            print(f"recall-lab {_version()}")
            raise typer.Exit(0)

    @app.callback()
    def root(version: bool = typer.Option(False, "--version", help="Print the version and exit.",
                                          callback=show_version, is_eager=True)) -> None:
        """A real IMAP/SMTP lab that shows why recalling an email works, half works, or cannot work."""

    for name in COMMAND_MODULES:
        module_name = f"recall_lab.harness.commands.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(app)
    return app


def _is_click_exception(exc: BaseException) -> bool:
    """True for click's own errors (usage errors, bad parameters), whichever click typer uses."""
    return any(cls.__name__ == "ClickException" and cls.__module__.endswith("exceptions")
               for cls in type(exc).__mro__)


def _help_command(app: typer.Typer, exc: Exception, args: list[str]) -> str:
    """The command whose --help the usage-error hint names. Errors raised while parsing a subcommand's options
    (e.g. `send --to` with no value) carry no context, so fall back to the subcommand named in the arguments."""
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        return str(ctx.command_path)
    names = {info.name or (info.callback.__name__ if info.callback else "") for info in app.registered_commands}
    first = next((a for a in args if not a.startswith("-")), None)
    return f"recall-lab {first}" if first in names else "recall-lab"


def main(argv: list[str] | None = None) -> None:
    app = build_app()
    try:
        status = app(args=argv, prog_name="recall-lab", standalone_mode=False)
    except CliError as exc:
        print(f"recall-lab: {exc}", file=sys.stderr)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        print("recall-lab: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # usage errors: typer >= 0.20 bundles its own click, older typer uses click
        if not _is_click_exception(exc):
            raise
        command = _help_command(app, exc, sys.argv[1:] if argv is None else argv)
        message = " ".join(exc.format_message().split())
        print(f"recall-lab: {message} (see '{command} --help')", file=sys.stderr)
        sys.exit(exc.exit_code)
    if status == 130:  # typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns it
        print("recall-lab: interrupted", file=sys.stderr)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    # Run as `python -m recall_lab.harness.cli`: call the imported module's main, so that the CliError the command
    # modules raise (recall_lab.harness.cli.CliError) is the class caught there, not a twin from __main__.
    from recall_lab.harness.cli import main as _main

    _main()
