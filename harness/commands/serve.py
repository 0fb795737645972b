"""`recall-lab serve`: run a lab (the default one, or a TOML config) until Ctrl-C or SIGTERM.

Why a long-running command: other programs (the demo script, a real mail client, `recall-lab send`) talk to the
lab over its sockets; they need the endpoints, printed as one JSON line with --json and written to
--endpoints-file, in the shape documented in docs/cli.md#the-endpoints-json.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import Annotated

import typer

from recall_lab.fake_servers.capture import CaptureSettings
from recall_lab.fake_servers.faults import FaultSpecError, parse_spec
from recall_lab.fake_servers.guard import EpisodeGate
from recall_lab.harness.cli import CliError
from recall_lab.harness.commands.log_output import EventLog, LogFormat, output_console
from recall_lab.harness.commands.tls import AutoTls, auto_context, server_context
from recall_lab.harness.config import (
    ConfigError,
    LabConfig,
    default_config,
    limits_from_dict,
    load_config,
    parse_backend_options,
)
from recall_lab.harness.lab import Lab, LabStartError


def _write_endpoints(path: Path, endpoints: dict) -> None:
    """Atomically (tmp + rename): a reader polling for the file never sees half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(endpoints, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise CliError(f"cannot write endpoints file {path}: {exc.strerror or exc}") from None


def advertised(endpoints: dict, host: str) -> dict:
    """The endpoints JSON with every listener's host replaced by `host`: the address a client should dial
    (a lab bound to 0.0.0.0 in a container is reached at the host's 127.0.0.1, never at 0.0.0.0)."""

    def walk(node: object) -> object:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            if "host" in out and "port" in out:
                old = f"{node['host']}:{node['port']}"
                new_host = f"[{host}]" if ":" in host else host
                out["host"] = host
                for key in ("url", "console", "mail", "api"):
                    if isinstance(out.get(key), str):
                        out[key] = out[key].replace(f"//{old}", f"//{new_host}:{node['port']}")
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(endpoints)  # type: ignore[return-value]


def _quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """One log line per episode of accept() failing (EMFILE/ENFILE), not asyncio's traceback per retry.

    The connection caps keep the lab's own connections below the open-files limit; this is for when something
    else took the descriptors (a lower limit than the caps assume, another part of the process).
    """
    gate = EpisodeGate(quiet=10.0)
    log = logging.getLogger("recall_lab.fake_servers.guard")

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            if gate.allow():
                log.warning("cannot accept connections: %s; retrying every second (logged once per episode)",
                            context.get("exception"))
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def _print_table(endpoints: dict, store: str) -> None:
    from rich.table import Table

    console = output_console()
    tls = any(info.get("starttls") for info in endpoints["domains"].values())
    servers = Table(title=f"recall-lab: servers (store: {store}{', STARTTLS on every port' if tls else ''})")
    for col in ("domain", "role", "IMAP", "submission", "MX"):
        servers.add_column(col)
    implicit = Table(title="implicit TLS (RFC 8314)")
    for col in ("domain", "IMAPS", "submission over TLS"):
        implicit.add_column(col)
    accounts = Table(title="accounts (log in with the full address)")
    for col in ("user", "password", "domain"):
        accounts.add_column(col)
    for domain, info in endpoints["domains"].items():
        def hp(key: str, info: dict = info) -> str:
            ep = info.get(key)
            return f"{ep['host']}:{ep['port']}" if ep else "-"

        servers.add_row(domain, info["role"], hp("imap"), hp("submission"), hp("mx"))
        if info.get("imaps") or info.get("submissions"):
            implicit.add_row(domain, hp("imaps"), hp("submissions"))
        for user, password in info["users"].items():
            accounts.add_row(user, password, domain)
    console.print(servers)
    if implicit.row_count:
        console.print(implicit)
    cafile = (endpoints.get("tls") or {}).get("cafile")
    if cafile:
        console.print(f"TLS: trust the CA in {cafile}", highlight=False, soft_wrap=True)
    console.print(accounts)
    web = endpoints.get("web")
    if web:
        console.print(f"console (open in a browser): {web['console']}", highlight=False, soft_wrap=True)
        console.print(f"webmail: {web['mail']}   API: {web['api']} (Authorization: Bearer {web['token']})",
                      highlight=False, soft_wrap=True)
    capture = endpoints.get("capture")
    if capture:
        console.print(f"capture: SMTP {capture['smtp']['host']}:{capture['smtp']['port']} takes any mail for anyone; "
                      f"IMAP {capture['imap']['host']}:{capture['imap']['port']} (log in as the recipient)",
                      highlight=False, soft_wrap=True)
    console.print("Ctrl-C stops the lab.")


async def _serve(config: LabConfig, *, store: str, host: str, port_base: int | None, as_json: bool,
                 endpoints_file: Path | None, tls_files: tuple[Path, Path] | None = None, tls: ssl.SSLContext | None = None, web: bool = True,
                 web_port: int = 0, web_token: str | None = None, advertise_host: str | None = None,
                 tls_cafile: Path | None = None, event_log: EventLog | None = None) -> None:
    _quiet_accept_errors(asyncio.get_running_loop())
    lab = Lab(config, store=store, host=host, port_base=port_base, tls=tls, web=web, web_port=web_port,
              web_token=web_token, tls_cafile=tls_cafile, tls_files=tls_files)
    try:
        await lab.start()
    except LabStartError as exc:
        raise CliError(str(exc), code=2) from None
    except ConfigError as exc:
        raise CliError(str(exc), code=2) from None
    if event_log is not None:
        event_log.attach(lab)
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        endpoints = lab.endpoints()
        if advertise_host is None and host in ("0.0.0.0", "::"):
            advertise_host = "127.0.0.1"
        if advertise_host is not None:
            endpoints = advertised(endpoints, advertise_host)
        if endpoints_file is not None:
            _write_endpoints(endpoints_file, endpoints)
        if as_json:
            sys.stdout.write(json.dumps(endpoints) + "\n")
            sys.stdout.flush()
        else:
            _print_table(endpoints, store)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().remove_signal_handler(sig)
        try:
            await lab.stop()
        finally:
            if event_log is not None:
                event_log.close()


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        json_: Annotated[bool, typer.Option("--json", help="Print the endpoints as one JSON line.")] = False,
        endpoints_file: Annotated[Path | None, typer.Option("--endpoints-file", help="Also write the JSON here.")] = None,
        host: Annotated[str, typer.Option("--host", help="Address every server listens on.")] = "127.0.0.1",
        port_base: Annotated[int | None, typer.Option(
            "--port-base",
            help="Fixed ports: domain i gets N+10*i (IMAP), +1 (submission), +2 (MX). Default: ephemeral.",
        )] = None,
        store: Annotated[str, typer.Option("--store", help="memory, or maildir:DIR (survives restarts).")] = "memory",
        config: Annotated[Path | None, typer.Option(
            "--config", help="A lab config in TOML (default: the default lab).")] = None,
        tls_cert: Annotated[Path | None, typer.Option(
            "--tls-cert", help="PEM certificate chain: every port offers STARTTLS; submission AUTH only after it.")] = None,
        tls_key: Annotated[Path | None, typer.Option(
            "--tls-key", help="PEM private key of --tls-cert (if not in the same file).")] = None,
        max_connections: Annotated[int | None, typer.Option(
            "--max-connections", help="Connections in all, every listener (default: from the open-files limit).")
        ] = None,
        max_connections_per_ip: Annotated[int | None, typer.Option(
            "--max-connections-per-ip", help="Connections from one client address (default: 3/4 of the total).")
        ] = None,
        login_timeout: Annotated[float | None, typer.Option(
            "--login-timeout", help="Seconds from connect to login/AUTH/MAIL before hanging up (0: none; 60).")
        ] = None,
        auth_failure_delay: Annotated[float | None, typer.Option(
            "--auth-failure-delay", help="Seconds before a wrong password is answered (default 2).")] = None,
        max_auth_failures: Annotated[int | None, typer.Option(
            "--max-auth-failures", help="Failed logins before the connection is closed (default 3).")] = None,
        web_port: Annotated[int, typer.Option(
            "--web-port", help="Port of the web server (console, webmail, API; default: ephemeral).")] = 0,
        web_token: Annotated[str | None, typer.Option(
            "--web-token", envvar="RECALL_LAB_WEB_TOKEN",
            help="The API's bearer token and the console's key (default: random; required with a non-loopback "
                 "--host). Prefer the environment variable: a command line is visible to other users.")] = None,
        no_web: Annotated[bool, typer.Option("--no-web", help="Do not start the web server.")] = False,
        advertise_host: Annotated[str | None, typer.Option(
            "--advertise-host", help="The host the endpoints JSON names (default: --host, or 127.0.0.1 when "
                                     "that is 0.0.0.0 or ::); a container's published address.")] = None,
        tls_mode: Annotated[str | None, typer.Option(
            "--tls", metavar="auto",
            help="auto: make a local CA and certificate (trustme); STARTTLS everywhere, plus IMAPS and "
                 "submission over implicit TLS; the endpoints JSON names the CA file.")] = None,
        tls_dir: Annotated[Path | None, typer.Option(
            "--tls-dir", help="Where --tls auto writes ca.pem and server.pem (default: a temporary directory "
                              "removed at exit).")] = None,
        fault: Annotated[list[str] | None, typer.Option(
            "--fault", metavar="DOMAIN:SPEC",
            help="Inject a fault, e.g. mail.example:rcpt=450:next=3 (repeatable; docs/faults.md).")] = None,
        fault_seed: Annotated[int | None, typer.Option(
            "--fault-seed", help="Seed of every domain's fault generator (default: the config's, else 0).")
        ] = None,
        backend: Annotated[list[str] | None, typer.Option(
            "--backend", metavar="DOMAIN=KIND",
            help="Who keeps a domain's mail: lab (default) or dovecot, a private Dovecot the lab starts "
                 "(repeatable; docs/dovecot-backend.md).")] = None,
        capture: Annotated[bool, typer.Option(
            "--capture", help="Also run capture mode: SMTP that takes any sender and recipient (AUTH optional), "
                              "IMAP where each recipient logs in (docs/testing-your-app.md).")] = False,
        verbose: Annotated[int, typer.Option(
            "--verbose", "-v", count=True, show_default=False,
            help="Log to stderr one line per connection, delivery, relay hop, recall, expunge and report; -vv "
                 "also the servers' own log (docs/cli.md#the-event-log-serve--v).")] = 0,
        log_format: Annotated[LogFormat | None, typer.Option(
            "--log-format", case_sensitive=False,
            help="text (for people) or json (one object a line: at, kind, domain, ...); implies -v. "
                 "[default: text]")] = None,
    ) -> None:
        """Run the lab's mail servers until Ctrl-C; print endpoints and accounts."""
        try:
            cfg = load_config(config) if config is not None else default_config()
        except ConfigError as exc:
            raise CliError(str(exc), code=2) from None
        flags = {"max_connections": max_connections, "max_connections_per_ip": max_connections_per_ip,
                 "login_timeout": login_timeout, "auth_failure_delay": auth_failure_delay,
                 "max_auth_failures": max_auth_failures}
        try:
            cfg.limits = limits_from_dict({k: v for k, v in flags.items() if v is not None}, cfg.limits)
        except ConfigError as exc:
            raise CliError(f"--{str(exc).removeprefix('limits.').replace('_', '-')}", code=2) from None
        try:
            cfg.set_backends(parse_backend_options(backend or []))
        except ConfigError as exc:
            raise CliError(str(exc), code=2) from None
        if capture and cfg.capture is None:
            cfg.capture = CaptureSettings()
        blocks = len(cfg.domains) + (1 if cfg.capture is not None else 0)  # the capture's block follows
        if port_base is not None and not 0 < port_base < 65536 - 10 * blocks:
            raise CliError(f"--port-base {port_base} leaves no room for {len(cfg.domains)} domains"
                           + (" and the capture" if cfg.capture is not None else ""), code=2)
        if tls_key is not None and tls_cert is None:
            raise CliError("--tls-key needs --tls-cert", code=2)
        if not 0 <= web_port < 65536:
            raise CliError(f"--web-port {web_port} is not a port number", code=2)
        _add_faults(cfg, fault or [], fault_seed)
        if tls_mode is not None and tls_mode != "auto":
            raise CliError(f"--tls {tls_mode}: the only mode is auto (or give --tls-cert)", code=2)
        if tls_mode is not None and tls_cert is not None:
            raise CliError("--tls auto and --tls-cert exclude each other", code=2)
        if tls_dir is not None and tls_mode is None:
            raise CliError("--tls-dir needs --tls auto", code=2)
        auto: AutoTls | None = auto_context([d.name for d in cfg.domains], tls_dir) if tls_mode else None
        tls = auto.context if auto is not None else server_context(tls_cert, tls_key) if tls_cert else None
        if log_format is not None:
            verbose = max(verbose, 1)
        event_log = EventLog(sys.stderr, log_format or LogFormat.text, verbose) if verbose else None
        try:
            tls_files = ((auto.directory / "server.pem", auto.directory / "server.pem") if auto is not None
                         else (tls_cert, tls_key or tls_cert) if tls_cert is not None else None)
            asyncio.run(_serve(cfg, store=store, host=host, port_base=port_base, as_json=json_, tls_files=tls_files,
                               endpoints_file=endpoints_file, tls=tls, web=not no_web, web_port=web_port,
                               web_token=web_token, advertise_host=advertise_host,
                               tls_cafile=auto.cafile if auto is not None else None, event_log=event_log))
        finally:
            if auto is not None:
                auto.cleanup()


def _add_faults(cfg: LabConfig, specs: list[str], seed: int | None) -> None:
    """--fault DOMAIN:SPEC rules onto the config's domains (after its own), --fault-seed onto every domain;
    a bad spec or an unknown domain is one line and exit 2."""
    for spec in specs:
        try:
            domain, rule = parse_spec(spec)
        except FaultSpecError as exc:
            raise CliError(f"--fault {exc}", code=2) from None
        try:
            cfg.domain(domain).faults.append(rule)
        except KeyError:
            raise CliError(f"--fault {spec!r}: no domain {domain} in this lab (has: "
                           f"{', '.join(d.name for d in cfg.domains)})", code=2) from None
    if seed is not None:
        for d in cfg.domains:
            d.fault_seed = seed
