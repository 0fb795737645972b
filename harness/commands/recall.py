"""`recall-lab recall`: recall a message of a running lab (`recall-lab serve`) and print the recall report.

Why a thin command: everything it does is the recall agent's (harness/recall_agent.py); the command reads the
endpoints file `serve` wrote, turns the agent's expected failures into one line, and prints the report (or, after
`--wait`, what is still pending).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Annotated, Any

import typer

from recall_lab.fake_servers.recall.format import RecallReport
from recall_lab.harness.cli import EXIT_USAGE, CliError
from recall_lab.harness.commands.tls import client_context
from recall_lab.harness.recall_agent import RecallAgent, RecallAgentError


def _load_replacement(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read replacement {path}: {exc.strerror or exc}", code=EXIT_USAGE) from None
    if b":" not in raw.split(b"\n", 1)[0]:
        raise CliError(f"replacement {path} is not a message (RFC 5322 headers, blank line, body)",
                       code=EXIT_USAGE)
    return raw


def _load_endpoints(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read endpoints file {path}: {exc.strerror or exc}", code=EXIT_USAGE) from None
    except json.JSONDecodeError as exc:
        raise CliError(f"endpoints file {path} is not JSON: {exc.msg}", code=EXIT_USAGE) from None
    if not isinstance(data, dict) or not isinstance(data.get("domains"), dict):
        raise CliError(f"endpoints file {path} has no \"domains\" object (write it with `recall-lab serve`)",
                       code=EXIT_USAGE)
    return data


def _lab_password(endpoints: dict[str, Any], user: str) -> str:
    """The user's password from the endpoints `serve` wrote, else the lab's "<localpart>-password"."""
    users = endpoints["domains"].get(user.partition("@")[2].lower(), {}).get("users", {})
    return str(users.get(user.lower(), f"{user.partition('@')[0]}-password"))


def _print_report(report: RecallReport, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
        return
    typer.echo(f'Message Recall Report: "{report.original_subject}" {report.original_message_id} '
               f"({report.mode})")
    width = max((len(r.recipient) for r in report.results), default=0)
    status_width = max((len(r.status.value) for r in report.results), default=0)
    for row in report.results:
        line = f"  {row.recipient:<{width}}  {row.status.value:<{status_width}}  {row.detail or ''}"
        typer.echo(line.rstrip())
    if report.pending:
        typer.echo(f"still pending: {', '.join(report.pending)}")


async def _run(endpoints: dict[str, Any], user: str, password: str, message_id: str, replacement: bytes | None,
               wait: float, tls: ssl.SSLContext | None = None) -> tuple[RecallReport | None, tuple[str, ...]]:
    agent = RecallAgent(endpoints, user, password, timeout=max(wait, 5.0), tls=tls)
    handle = await agent.recall(message_id, action="replace" if replacement else "delete",
                                replacement=replacement)
    try:
        return await handle.report(timeout=wait, until_complete=True), handle.recipients
    except TimeoutError:
        return None, handle.recipients


def register(app: typer.Typer) -> None:
    @app.command("recall")
    def recall(
        endpoints: Annotated[Path, typer.Option("--endpoints", help="The endpoints file `recall-lab serve` wrote.")],
        user: Annotated[str, typer.Option("--user", help="The sender, e.g. alice@corp.example.")],
        message_id: Annotated[str, typer.Option("--message-id", help="The original's Message-ID: '<id@host>'.")],
        replace_with: Annotated[Path | None, typer.Option(
            "--replace-with", help="A message file (RFC 5322) to replace the original with.")] = None,
        wait: Annotated[float, typer.Option(
            "--wait", min=0.0, help="Seconds to wait for the report and for pending recipients.")] = 10.0,
        password: Annotated[str | None, typer.Option(
            "--password", help="Default: from the endpoints file, else '<localpart>-password'.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
        starttls: Annotated[bool, typer.Option(
            "--starttls", help="Upgrade IMAP and submission with STARTTLS (implied when the endpoints say starttls).")
        ] = False,
        cafile: Annotated[Path | None, typer.Option("--cafile", help="CA certificate to trust for STARTTLS.")] = None,
    ) -> None:
        """Recall a message: find it in the sender's Sent folder (or Outbox, while delayed send holds it), submit
        the recall, print the report."""
        if "@" not in user:
            raise CliError(f"--user must be a full address, not {user!r}", code=EXIT_USAGE)
        replacement = _load_replacement(replace_with) if replace_with is not None else None
        lab = _load_endpoints(endpoints)
        secret = password if password is not None else _lab_password(lab, user)
        says_tls = lab["domains"].get(user.rpartition("@")[2].lower(), {}).get("starttls")
        tls = client_context(cafile) if starttls or says_tls else None
        try:
            report, recipients = asyncio.run(_run(lab, user, secret, message_id, replacement, wait, tls))
        except RecallAgentError as exc:
            raise CliError(str(exc)) from None
        if report is None:
            if as_json:
                typer.echo(json.dumps({"report": None, "pending": list(recipients)}))
            else:
                typer.echo(f"no recall report within {wait:g} s; still pending: {', '.join(recipients)}")
            return
        _print_report(report, as_json)
