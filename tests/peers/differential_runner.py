"""Runs a section of the differential script against one server and records what came back."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from .differential_script import Idle, Raw
from .raw_imap import ImapConnectionClosed, RawImap
from .servers import ImapEndpoint

_VAR = re.compile(rb"\$\{([a-z_]+)(?::([^}]*))?\}")
_NOT_SENT = b"<not sent: this connection failed earlier>"
_CODE_VALUE = re.compile(rb"\[(HIGHESTMODSEQ|UIDVALIDITY) (\d+)\]")


@dataclass
class Exchange:
    """One step as sent (placeholders unfilled, literals abbreviated) and the raw responses."""

    conn: str
    command: str
    responses: list[bytes]


def shown(command: bytes) -> str:
    """A command for display: literal payloads abbreviated, so transcripts stay readable."""
    out = re.sub(rb"\{(\d+)(\+?)\}\r\n", lambda m: b"{%s%s}" % (m.group(1), m.group(2)), command)
    return out.decode("utf-8", "replace").replace("\r\n", " \\r\\n ")[:160]


class SectionRun:
    """One run of one section against one server: opens connections on first use, fills in `${...}` from what
    this server said before, and records every exchange. Errors (timeouts, a closed connection) are recorded
    as responses, so the comparison shows them instead of stopping."""

    def __init__(self, endpoint: ImapEndpoint) -> None:
        self.ep = endpoint
        self.conns: dict[str, RawImap] = {}
        self.selected: dict[str, str] = {}
        self.values: dict[tuple[str, str], bytes] = {}  # ("hms"|"uidvalidity", mailbox) -> value
        self.counter = 0
        self.transcript: list[Exchange] = []
        self.dead: set[str] = set()  # connections that timed out or closed: later steps on them are not sent

    def conn(self, name: str) -> RawImap:
        if name not in self.conns:
            self.conns[name] = RawImap(self.ep.host, self.ep.port)
            self.transcript.append(Exchange(name, "<connect>", [self.conns[name].greeting]))
        return self.conns[name]

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()

    def fill(self, text: bytes) -> bytes:
        def value(match: re.Match[bytes]) -> bytes:
            name, arg = match.group(1).decode(), (match.group(2) or b"").decode()
            if name == "user":
                return self.ep.user.encode()
            if name == "password":
                return self.ep.password.encode()
            if name == "sasl_plain":
                return base64.b64encode(f"\0{self.ep.user}\0{self.ep.password}".encode())
            if name == "sasl_wrong":
                return base64.b64encode(f"\0{self.ep.user}\0not-{self.ep.password}".encode())
            if name == "lit":
                data = value(_VAR.match(b"${%s}" % arg.encode()))
                return b"{%d}\r\n%s" % (len(data), data)
            if name == "hms_next":
                return str(int(self.values.get(("hms", arg), b"0")) + 1).encode()
            return self.values.get((name, arg), b"0")
        return _VAR.sub(value, text)

    def learn(self, conn: str, command: bytes, responses: list[bytes]) -> None:
        """Remember the HIGHESTMODSEQ and UIDVALIDITY this server reported, for later `${...}` values."""
        words = command.split(b" ")
        if words[0].upper() in (b"SELECT", b"EXAMINE") and len(words) > 1:
            mailbox = words[1].decode().strip('"')
            self.selected[conn] = "INBOX" if mailbox.upper() == "INBOX" else mailbox
        for response in responses:
            for name, number in _CODE_VALUE.findall(response):
                key = "hms" if name == b"HIGHESTMODSEQ" else "uidvalidity"
                self.values[(key, self.selected.get(conn, ""))] = number
            status = re.match(rb'\* STATUS "?([^" ]+)"? \((.*)\)', response)
            if status:
                pairs = status.group(2).split()
                for key, val in zip(pairs[::2], pairs[1::2], strict=False):
                    if key.upper() == b"HIGHESTMODSEQ":
                        self.values[("hms", status.group(1).decode())] = val
                    elif key.upper() == b"UIDVALIDITY":
                        self.values[("uidvalidity", status.group(1).decode())] = val

    def command(self, conn: str, text: str | bytes) -> list[bytes]:
        raw = text.encode() if isinstance(text, str) else text
        self.counter += 1
        tag = f"{conn.lower()}{self.counter:03d}"
        filled = self.fill(raw)
        if conn in self.dead:
            responses = [_NOT_SENT]
        else:
            try:
                responses = self.conn(conn).command(tag, filled)
            except (ImapConnectionClosed, TimeoutError, OSError) as exc:
                responses = [f"<{type(exc).__name__}: {exc}>".encode()]
                self.dead.add(conn)  # one hung server must cost one timeout, not one per step
        self.learn(conn, filled, responses)
        self.transcript.append(Exchange(conn, f"{tag} {shown(raw)}", responses))
        return responses

    def idle(self, step: Idle) -> None:
        self.counter += 1
        tag = f"{step.conn.lower()}{self.counter:03d}"
        other = step.command.encode() if isinstance(step.command, str) else step.command
        title = f"{tag} IDLE (while {step.other}: {shown(other)})"
        if step.conn in self.dead:
            self.transcript.append(Exchange(step.conn, title, [_NOT_SENT]))
            return
        responses: list[bytes] = []
        try:
            imap = self.conn(step.conn)
            imap.send_raw(f"{tag} IDLE\r\n".encode())
            while not (response := imap.read_response()).startswith(b"+"):
                responses.append(response)
            responses.append(response)
            self.command(step.other, step.command)
            try:
                while True:  # the push: wait for it (bounded), then end the IDLE
                    response = imap.read_response(timeout=5)
                    responses.append(response)
                    if step.until in response:
                        break
            except TimeoutError:
                responses.append(b"<no push within 5 s>")
            imap.send_raw(b"DONE\r\n")
            responses += imap.read_until_tagged(tag)
        except (ImapConnectionClosed, TimeoutError, OSError) as exc:
            responses.append(f"<{type(exc).__name__}: {exc}>".encode())
            self.dead.add(step.conn)
        self.transcript.append(Exchange(step.conn, title, responses))

    def run(self, steps: list) -> list[Exchange]:
        try:
            for step in steps:
                if isinstance(step, Idle):
                    self.idle(step)
                elif isinstance(step, Raw):
                    if step.conn in self.dead:
                        continue
                    try:
                        self.conn(step.conn).send_raw(self.fill(step.data))
                    except (ImapConnectionClosed, OSError) as exc:
                        self.transcript.append(Exchange(step.conn, "<raw>", [f"<{exc}>".encode()]))
                        self.dead.add(step.conn)
                else:
                    self.command(*step)
        finally:
            self.close()
        return self.transcript
