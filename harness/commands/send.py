"""`recall-lab send`: submit one message to a running lab, as a mail client would, and print its Message-ID.

Why through SMTP submission and not the store: the point of the lab is real mail flow; the message goes through
AUTH, the sender checks, the pipeline and (for another domain) the relay, like any client's. The Message-ID
printed is what `recall-lab recall` names later.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Annotated, Any

import aiosmtplib
import typer

from recall_lab.harness.cli import EXIT_USAGE, CliError
from recall_lab.harness.commands.tls import client_context
from recall_lab.harness.own_name import client_name


def _load_endpoints(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read endpoints file {path}: {exc.strerror or exc}", code=EXIT_USAGE) from None
    except ValueError:
        raise CliError(f"endpoints file {path} is not JSON (write it with `recall-lab serve --endpoints-file`)",
                       code=EXIT_USAGE) from None
    if not isinstance(data, dict) or not isinstance(data.get("domains"), dict):
        raise CliError(f"endpoints file {path} has no \"domains\" object", code=EXIT_USAGE)
    return data


def _refuse_line_breaks(values: dict[str, list[str]]) -> None:
    """A CR or LF in a header value would start a new header (`--subject "x\nBcc: y"`): refuse it in one line."""
    for option, items in values.items():
        for item in items:
            if "\r" in item or "\n" in item:
                raise CliError(f"{option} may not contain a line break", code=EXIT_USAGE)


def build_message(sender: str, to: list[str], cc: list[str], subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    if to:
        msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now().astimezone())
    msg["Message-ID"] = make_msgid(domain=client_name(sender))
    msg.set_content(body)
    return msg


async def _submit(msg: EmailMessage, *, host: str, port: int, user: str, password: str, recipients: list[str],
                  starttls: bool, context: ssl.SSLContext | None) -> dict[str, Any]:
    """Submit; returns the recipients the server refused while accepting the others ({address: response})."""
    errors, _reply = await aiosmtplib.send(msg, hostname=host, port=port, username=user, password=password,
                                           sender=user, recipients=recipients, start_tls=starttls,
                                           tls_context=context, timeout=30, local_hostname=client_name(user))
    return dict(errors)


def register(app: typer.Typer) -> None:
    @app.command()
    def send(
        endpoints: Annotated[Path, typer.Option("--endpoints", help="The JSON `recall-lab serve` wrote.")],
        sender: Annotated[str, typer.Option("--from", help="The sending user (logs in as this address).")],
        subject: Annotated[str, typer.Option("--subject")],
        to: Annotated[list[str] | None, typer.Option("--to", help="A To recipient (repeat for more).")] = None,
        cc: Annotated[list[str] | None, typer.Option("--cc", help="A Cc recipient (repeat for more).")] = None,
        bcc: Annotated[list[str] | None, typer.Option("--bcc", help="A Bcc recipient: in the envelope only.")] = None,
        body: Annotated[str | None, typer.Option("--body", help="The text of the message.")] = None,
        body_file: Annotated[Path | None, typer.Option("--body-file", help="Read the text from this file.")] = None,
        password: Annotated[str | None, typer.Option("--password", help="Default: the one in the endpoints file.")] = None,
        starttls: Annotated[bool, typer.Option(
            "--starttls", help="Upgrade with STARTTLS before AUTH (implied when the endpoints say starttls).")] = False,
        cafile: Annotated[Path | None, typer.Option("--cafile", help="CA certificate to trust for STARTTLS.")] = None,
    ) -> None:
        """Submit a message through the sender's submission listener; print its Message-ID."""
        to, cc, bcc = to or [], cc or [], bcc or []
        _refuse_line_breaks({"--from": [sender], "--to": to, "--cc": cc, "--bcc": bcc, "--subject": [subject],
                             "--password": [password or ""]})
        if (body is None) == (body_file is None):
            raise CliError("give exactly one of --body TEXT or --body-file FILE", code=EXIT_USAGE)
        if not to and not cc and not bcc:
            raise CliError("no recipients: give --to, --cc or --bcc", code=EXIT_USAGE)
        if body_file is not None:
            try:
                body = body_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CliError(f"cannot read body file {body_file}: {getattr(exc, 'strerror', None) or exc}",
                               code=EXIT_USAGE) from None
        assert body is not None
        user = sender.strip().lower()
        domain = user.rpartition("@")[2]
        info = _load_endpoints(endpoints)["domains"].get(domain)
        if info is None or "submission" not in info:
            raise CliError(f"no submission server for {domain or sender!r} in {endpoints}", code=EXIT_USAGE)
        secret = password if password is not None else info.get("users", {}).get(user)
        if secret is None:
            raise CliError(f"{user} is not a user in {endpoints}; give --password", code=EXIT_USAGE)
        try:
            msg = build_message(user, to, cc, subject, body)
        except ValueError as exc:  # whatever else the email package refuses in a header value
            raise CliError(f"cannot build the message: {' '.join(str(exc).split())}", code=EXIT_USAGE) from None
        host, port = info["submission"]["host"], int(info["submission"]["port"])
        starttls = starttls or bool(info.get("starttls"))  # a lab served with TLS takes AUTH only after it
        context = client_context(cafile) if starttls else None
        try:
            refused = asyncio.run(_submit(msg, host=host, port=port, user=user, password=secret,
                                          recipients=[*to, *cc, *bcc], starttls=starttls, context=context))
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            raise CliError(f"refused {first.recipient}: {first.code} {first.message}") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise CliError(f"submission server {host}:{port} refused the message: {exc.code} {exc.message}"
                           ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise CliError(f"cannot submit to {host}:{port}: {exc}") from None
        print(msg["Message-ID"], flush=True)
        if refused:  # accepted for some, refused for others: say so, and fail, as sendmail does
            lines = [f"refused {rcpt}: {reply.code} {' '.join(reply.message.split())}"
                     for rcpt, reply in refused.items()]
            for line in lines[:-1]:
                print(f"recall-lab: {line}", file=sys.stderr)
            raise CliError(lines[-1])
