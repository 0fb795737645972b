"""Turn two servers' raw IMAP transcripts into comparable text, erasing only what may legitimately differ.

What is erased or rewritten, and why it may differ between correct servers:
- free text after a status (and after a response code): RFC 3501 leaves it to the server;
- CAPABILITY: only the capabilities recall-lab must have are compared (Dovecot has many more; order is free),
  and CAPABILITY response codes, which are optional, are dropped;
- RFC 5530 response codes other than AUTHENTICATIONFAILED (optional), and ALERT (text for the user) are dropped;
- UIDVALIDITY values: each distinct value becomes V1, V2... in order of appearance (so "stable" and
  "distinct per mailbox" are still compared);
- dates: INTERNALDATE is compared as an instant in UTC (the zone it is shown in is the server's choice);
- MODSEQ numbers: only their ordering is compared: a HIGHESTMODSEQ becomes first/up/same/down against the
  previous one of the same mailbox, a message's MODSEQ becomes above/not-above the last HIGHESTMODSEQ seen;
- ID response contents; untagged `OK` without a response code (e.g. "Still here" during IDLE); untagged
  CAPABILITY other than in answer to CAPABILITY; LSUB attributes other than Noselect (LSUB defines no others);
  an ENABLED response that lists nothing;
- continuation requests ("+"): a refused command may or may not get one first;
- FETCH responses for the same message within one command are merged (FLAGS may come separately);
- order: the order of untagged responses within one command is free except for EXPUNGE, whose sequence
  numbers are turned into the set of original positions removed (RFC 3501 lets a server report the same
  removal as "2 EXPUNGE, 1 EXPUNGE" or "1 EXPUNGE, 1 EXPUNGE"); flags, LIST attributes and FETCH items are
  sorted; UID sets are expanded ("1:3" == "1,2,3");
- BODYSTRUCTURE/BODY are compared case-insensitively (MIME types and parameter names are), and so is the
  mailbox name INBOX;
- a FETCH in answer to STORE that repeats flags the client already knew (the message did not change), a
  RECENT that repeats the count the client already had, and a UID nobody asked for (before QRESYNC) are
  dropped: servers differ on sending them and RFC 3501 allows both;
- after login, capabilities that only matter before it (SASL-IR, AUTH=) are not compared, and BADCHARSET's
  optional list of charsets is dropped;
- HIGHESTMODSEQ: in a SELECT/EXAMINE before the connection used CONDSTORE it is not compared (RFC 7162
  3.1.2.1 wants it on every SELECT of a server with persistent mod-sequences; Dovecot sends it only once the
  mailbox has them); on a tagged OK or an untagged OK it is the same news, so both become an untagged line;
- in sections where two sessions race for \\Recent (`ignore_recent`), RECENT and \\Recent are not compared:
  which session is "first to be notified" of a new message is a race.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

#: Capabilities compared after login (the issue's list); before login only the ones Dovecot shows then.
COMPARED_CAPABILITIES = frozenset({
    "IMAP4REV1", "LITERAL+", "IDLE", "UIDPLUS", "MOVE", "NAMESPACE", "ENABLE", "SPECIAL-USE", "ID", "UNSELECT",
    "CHILDREN", "SASL-IR", "AUTH=PLAIN", "CONDSTORE", "QRESYNC",
})
#: Only meaningful before login, so a server may or may not list them afterwards.
PREAUTH_ONLY = frozenset({"SASL-IR", "AUTH=PLAIN", "LOGINDISABLED", "STARTTLS"})
PRELOGIN_CAPABILITIES = frozenset({"IMAP4REV1", "SASL-IR", "ID", "ENABLE", "IDLE", "LITERAL+", "AUTH=PLAIN"})

#: Response codes compared (by name, with normalised arguments); all others are dropped.
KEPT_CODES = frozenset({
    "BADCHARSET", "PARSE", "PERMANENTFLAGS", "READ-ONLY", "READ-WRITE", "TRYCREATE", "UIDNEXT",
    "UIDVALIDITY", "UNSEEN", "APPENDUID", "COPYUID", "UIDNOTSTICKY", "HIGHESTMODSEQ", "NOMODSEQ", "MODIFIED",
    "CLOSED", "AUTHENTICATIONFAILED",
})


class Atom(str):
    """An IMAP atom (number, flag, keyword, NIL is None)."""


# --- parsing ----------------------------------------------------------------------------------------------


def _atom_end(data: bytes, pos: int) -> int:
    depth = 0
    while pos < len(data):
        c = data[pos:pos + 1]
        if c == b"[":
            depth += 1
        elif c == b"]":
            depth -= 1
        elif depth == 0 and c in (b" ", b"(", b")"):
            break
        elif depth > 0 and c == b'"':
            pos = data.index(b'"', pos + 1)
        pos += 1
    return pos


def parse(data: bytes, pos: int = 0, *, nested: bool = False) -> tuple[list, int]:
    """Parse IMAP data into Atoms, bytes (quoted and literal strings), None (NIL) and lists."""
    items: list = []
    while pos < len(data):
        c = data[pos:pos + 1]
        if c == b" ":
            pos += 1
        elif c == b"(":
            sub, pos = parse(data, pos + 1, nested=True)
            items.append(sub)
        elif c == b")":
            if nested:
                return items, pos + 1
            pos += 1
        elif c == b'"':
            out = bytearray()
            pos += 1
            while pos < len(data) and data[pos:pos + 1] != b'"':
                if data[pos:pos + 1] == b"\\":
                    pos += 1
                out += data[pos:pos + 1]
                pos += 1
            items.append(bytes(out))
            pos += 1
        elif c == b"{" and (m := re.match(rb"\{(\d+)\+?\}\r\n", data[pos:])):
            start = pos + m.end()
            size = int(m.group(1))
            items.append(data[start:start + size])
            pos = start + size
        else:
            end = _atom_end(data, pos)
            word = data[pos:end].decode("utf-8", "replace")
            items.append(None if word.upper() == "NIL" else Atom(word))
            pos = end
    return items, pos


def render(value: object, *, fold: bool = False) -> str:
    """Canonical text of parsed data (bytes shown with repr so CR/LF stay visible)."""
    if value is None:
        return "NIL"
    if isinstance(value, list):
        return "(" + " ".join(render(v, fold=fold) for v in value) + ")"
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
        return repr(text.lower() if fold else text)
    return str(value).lower() if fold else str(value)


def expand_set(text: str) -> str:
    """A sequence/UID set as its sorted, comma-separated members ("3:1,5" -> "1,2,3,5"); `*` stays."""
    members: set[int] = set()
    extra = []
    for part in text.split(","):
        if ":" in part:
            a, b = part.split(":", 1)
            if a.isdigit() and b.isdigit():
                lo, hi = sorted((int(a), int(b)))
                members.update(range(lo, hi + 1))
                continue
        if part.isdigit():
            members.add(int(part))
        else:
            extra.append(part)
    return ",".join([str(n) for n in sorted(members)] + extra)


def utc_instant(text: str) -> str:
    try:
        return datetime.strptime(text.strip(), "%d-%b-%Y %H:%M:%S %z").astimezone(UTC).isoformat()
    except ValueError:
        return f"<bad date {text!r}>"


# --- normalising ------------------------------------------------------------------------------------------

_STATUS = re.compile(rb"^(\*|[^ ]+) (OK|NO|BAD|BYE|PREAUTH)(?: |$)(?:\[([^\]]*)\])?", re.I)
_CONDSTORE_ENABLING = re.compile(r"CONDSTORE|QRESYNC|MODSEQ|CHANGEDSINCE", re.I)
_NUMBERED = re.compile(rb"^\* (\d+) (EXISTS|RECENT|EXPUNGE|FETCH)\b ?(.*)$", re.I | re.S)


@dataclass
class Normaliser:
    """Stateful across one server's transcript (UIDVALIDITY labels and MODSEQ history)."""

    uidvalidity_labels: dict[str, str] = field(default_factory=dict)
    highest: dict[str, int] = field(default_factory=dict)  # mailbox -> last HIGHESTMODSEQ seen
    selected: dict[str, str] = field(default_factory=dict)  # connection -> selected mailbox
    authenticated: set[str] = field(default_factory=set)
    ignore_recent: bool = False  # where sessions race for \Recent, which one gets it is not comparable
    flags: dict[str, dict[int, str]] = field(default_factory=dict)  # connection -> seq -> last FLAGS seen
    uids: dict[str, dict[int, str]] = field(default_factory=dict)  # connection -> seq -> UID
    recent: dict[str, str] = field(default_factory=dict)  # connection -> last RECENT count seen
    qresync: set[str] = field(default_factory=set)
    condstore: set[str] = field(default_factory=set)  # connections that issued a CONDSTORE enabling command

    def uidvalidity(self, value: str) -> str:
        return self.uidvalidity_labels.setdefault(value, f"V{len(self.uidvalidity_labels) + 1}")

    def highestmodseq(self, mailbox: str, value: str) -> str:
        if not value.isdigit():
            return f"HMS?{value}"
        number, previous = int(value), self.highest.get(mailbox)
        self.highest[mailbox] = number
        if previous is None:
            return "HMS:first"
        return "HMS:" + ("up" if number > previous else "same" if number == previous else "DOWN")

    def modseq(self, conn: str, value: str) -> str:
        last = self.highest.get(self.selected.get(conn, ""))
        if not value.isdigit() or last is None:
            return "MODSEQ:?"
        return "MODSEQ:" + ("above-last-HMS" if int(value) > last else "within-last-HMS")

    # --- one step ---------------------------------------------------------------------------------------

    def step(self, conn: str, command: str, responses: list[bytes]) -> list[str]:
        if _CONDSTORE_ENABLING.search(command):
            self.condstore.add(conn)
        words = [w.upper() for w in command.split(" ", 2)[:2]]
        uid_command = bool(words) and words[0] == "UID"
        name = (words[1] if uid_command and len(words) > 1 else words[0]) if words else ""
        if name in ("SELECT", "EXAMINE", "CLOSE", "UNSELECT"):
            self.forget(conn)
        if name in ("SELECT", "EXAMINE"):
            parsed, _ = parse(command.encode().split(b" ", 1)[1] if " " in command else b"")
            mbox = parsed[0] if parsed else b""
            mbox = mbox.decode() if isinstance(mbox, bytes) else str(mbox)
            self.selected[conn] = "INBOX" if mbox.upper() == "INBOX" else mbox
        untagged: list[str] = []
        expunges: list[int] = []
        tagged: list[str] = []
        fetches: dict[int, dict[str, str]] = {}
        for raw in responses:
            fetch = _NUMBERED.match(raw)
            if fetch and fetch.group(2).upper() == b"FETCH":
                # one message's data may come in several FETCH responses (e.g. FLAGS after an implicit \Seen)
                items, _ = parse(fetch.group(3))
                fetches.setdefault(int(fetch.group(1)), {}).update(
                    self.fetch_items(conn, items[0] if items and isinstance(items[0], list) else []))
                continue
            line = self.response(conn, command, raw, expunges)
            if line is None:
                continue
            if raw.startswith(b"* ") or raw.startswith(b"<"):
                untagged.append(line)
            else:
                if " [HIGHESTMODSEQ " in line:  # the same news whether on the tagged OK or an untagged one
                    line, _, code = line.partition(" [")
                    untagged.append(f"* OK [{code}")
                tagged.append(line)
                if name in ("LOGIN", "AUTHENTICATE") and line.split(" ")[1:2] == ["OK"]:
                    self.authenticated.add(conn)
        known = self.flags.setdefault(conn, {})
        for number, data in sorted(fetches.items()):
            if "UID" in data:
                self.uids.setdefault(conn, {})[number] = data["UID"]
                asked = uid_command or (name == "FETCH" and "UID" in command.upper())
                if not (asked or conn in self.qresync):
                    del data["UID"]  # unsolicited UID: optional unless asked for (or QRESYNC is on)
            if "FLAGS" in data:
                if self.ignore_recent:
                    data["FLAGS"] = flag_list([f for f in data["FLAGS"].strip("()").split() if f != "\\Recent"])
                unchanged = known.get(number) == data["FLAGS"]
                known[number] = data["FLAGS"]
                if name == "STORE" and unchanged and set(data) <= {"FLAGS", "UID"}:
                    continue  # an echo of flags that did not change: servers differ on sending it
            untagged.append(f"* {number} FETCH (" + " ".join(f"{k} {v}" for k, v in sorted(data.items())) + ")")
        if name == "STORE" and ".SILENT" in command.upper():
            self.apply_silent_store(conn, command, uid_command)
        if expunges:
            untagged.append("* EXPUNGED original positions " + ",".join(map(str, original_positions(expunges))))
            self.forget(conn)
        if name == "ENABLE" and "QRESYNC" in command.upper():
            self.qresync.add(conn)
        return sorted(untagged) + tagged

    def forget(self, conn: str) -> None:
        """Drop what is known of the selected mailbox's messages (sequence numbers no longer mean the same)."""
        self.flags.pop(conn, None)
        self.uids.pop(conn, None)
        self.recent.pop(conn, None)

    def apply_silent_store(self, conn: str, command: str, uid_command: bool) -> None:
        """Track what a STORE .SILENT did, so a later echo of unchanged flags is recognised as such."""
        known = self.flags.get(conn, {})
        match = re.match(r"(?:UID )?STORE (\S+) (?:\(UNCHANGEDSINCE \d+\) )?([+-]?)FLAGS\.SILENT \((.*)\)",
                         command, re.I)
        if not match:
            self.flags.pop(conn, None)  # cannot tell which messages changed: know nothing
            return
        given = set(match.group(3).split())
        targets = [n for n in expand_set(match.group(1)).split(",") if n.isdigit()]
        if uid_command:
            by_uid = {uid: seq for seq, uid in self.uids.get(conn, {}).items()}
            if any(t not in by_uid for t in targets):
                self.flags.pop(conn, None)
                return
            targets = [str(by_uid[t]) for t in targets]
        for number in [int(n) for n in targets]:
            if number not in known:
                continue
            old = set(known[number].strip("()").split())
            if match.group(2) == "+":
                new = old | given
            elif match.group(2) == "-":
                new = old - given
            else:
                new = given | (old & {"\\Recent"})
            known[number] = flag_list(sorted(new))

    def response(self, conn: str, command: str, raw: bytes, expunges: list[int]) -> str | None:
        if raw.startswith(b"+"):
            return None  # continuation requests: an I/O detail (a refused command may or may not get one)
        if raw.startswith(b"<"):
            return raw.decode("utf-8", "replace")  # the runner's own note (timeout, closed connection)
        status = _STATUS.match(raw)
        if status:
            tag, word = status.group(1).decode(), status.group(2).decode().upper()
            text = status.group(3).decode("utf-8", "replace") if status.group(3) else ""
            if (text.upper().startswith("HIGHESTMODSEQ") and conn not in self.condstore
                    and command.upper().startswith(("SELECT", "EXAMINE"))):
                return None  # see the module docstring: only compared once CONDSTORE is in play
            code = self.code(conn, text) if text else None
            if tag == "*" and word == "OK" and code is None:
                return None  # greeting text, "Still here", hints: free text only
            return f"{tag} {word}" + (f" [{code}]" if code else "")
        numbered = _NUMBERED.match(raw)
        if numbered:
            number, kind = numbered.group(1).decode(), numbered.group(2).decode().upper()
            if kind == "EXPUNGE":
                expunges.append(int(number))
                return None
            if kind == "RECENT":
                if self.ignore_recent:
                    return None
                if self.recent.get(conn) == number and not command.upper().startswith(("SELECT", "EXAMINE")):
                    return None  # a repeat of the count the client already has: optional
                self.recent[conn] = number
            return f"* {number} {kind}"
        head, _, rest = raw[2:].partition(b" ")
        kind = head.decode("utf-8", "replace").upper()
        if kind == "CAPABILITY":
            if command.split(" ")[0].upper() != "CAPABILITY":
                return None  # unsolicited (e.g. after LOGIN): optional
            return "* CAPABILITY " + self.capabilities(conn, rest.decode().split())
        if kind == "ID":
            return "* ID <contents not compared>"
        parsed, _ = parse(rest)
        if kind in ("LIST", "LSUB") and len(parsed) >= 3 and isinstance(parsed[0], list):
            attrs = sorted(str(a).lower() for a in parsed[0])
            if kind == "LSUB":  # only \Noselect has a defined meaning in LSUB
                attrs = [a for a in attrs if a == "\\noselect"]
            name = inbox(parsed[2].decode() if isinstance(parsed[2], bytes) else str(parsed[2]))
            return f"* {kind} ({' '.join(attrs)}) {render(parsed[1])} {name!r}"
        if kind == "STATUS" and len(parsed) >= 2:
            mbox = inbox(parsed[0].decode() if isinstance(parsed[0], bytes) else str(parsed[0]))
            pairs = dict(zip(parsed[1][::2], parsed[1][1::2], strict=False))
            shown = []
            for key, value in sorted(pairs.items(), key=lambda kv: str(kv[0]).upper()):
                key = str(key).upper()
                if key == "UIDVALIDITY":
                    value = self.uidvalidity(str(value))
                elif key == "HIGHESTMODSEQ":
                    value = self.highestmodseq(mbox, str(value))
                shown.append(f"{key} {value}")
            return f"* STATUS {mbox!r} ({' '.join(shown)})"
        if kind == "SEARCH":
            numbers = sorted(int(p) for p in parsed if isinstance(p, str) and p.isdigit())
            modseq = [p for p in parsed if isinstance(p, list)]
            tail = ""
            if modseq and len(modseq[0]) == 2:
                tail = f" ({self.modseq(conn, str(modseq[0][1]))})"
            return "* SEARCH" + "".join(f" {n}" for n in numbers) + tail
        if kind == "FLAGS" and parsed and isinstance(parsed[0], list):
            return "* FLAGS " + flag_list(parsed[0])
        if kind == "ENABLED":
            if not parsed:
                return None  # nothing enabled: RFC 5161 servers differ on sending an empty ENABLED
            return "* ENABLED " + " ".join(sorted(str(p).upper() for p in parsed))
        if kind == "VANISHED":
            earlier = " (EARLIER)" if parsed and isinstance(parsed[0], list) else ""
            return f"* VANISHED{earlier} " + expand_set(str(parsed[-1])) if parsed else "* VANISHED"
        return f"* {kind} " + " ".join(render(p) for p in parsed)

    def capabilities(self, conn: str, caps: list[str]) -> str:
        compared = (COMPARED_CAPABILITIES - PREAUTH_ONLY) if conn in self.authenticated else PRELOGIN_CAPABILITIES
        return " ".join(sorted({c.upper() for c in caps} & compared))

    def code(self, conn: str, text: str) -> str | None:
        name, _, args = text.partition(" ")
        name = name.upper()
        if name not in KEPT_CODES:
            return None
        if name == "UIDVALIDITY":
            return f"UIDVALIDITY {self.uidvalidity(args)}"
        if name == "HIGHESTMODSEQ":
            return f"HIGHESTMODSEQ {self.highestmodseq(self.selected.get(conn, ''), args)}"
        if name == "PERMANENTFLAGS":
            parsed, _ = parse(args.encode())
            return "PERMANENTFLAGS " + flag_list(parsed[0] if parsed and isinstance(parsed[0], list) else [])
        if name == "APPENDUID":
            parts = args.split()
            return f"APPENDUID {self.uidvalidity(parts[0])} {expand_set(parts[1])}" if len(parts) == 2 else name
        if name == "COPYUID":
            parts = args.split()
            if len(parts) == 3:
                return f"COPYUID {self.uidvalidity(parts[0])} {expand_set(parts[1])} {expand_set(parts[2])}"
        if name == "BADCHARSET":
            return name  # the list of supported charsets is optional
        if name == "MODIFIED":
            return f"MODIFIED {expand_set(args)}"
        return f"{name} {args}".strip()

    def fetch_items(self, conn: str, items: list) -> dict[str, str]:
        pairs = []
        for key, value in zip(items[::2], items[1::2], strict=False):
            key = str(key).upper()
            if key == "FLAGS":
                shown = flag_list(value if isinstance(value, list) else [])
            elif key == "INTERNALDATE":
                shown = utc_instant(value.decode() if isinstance(value, bytes) else str(value))
            elif key == "MODSEQ":
                shown = self.modseq(conn, str(value[0]) if isinstance(value, list) and value else str(value))
            elif key in ("BODYSTRUCTURE", "BODY"):
                shown = render(value, fold=True)
            else:
                shown = render(value)
            pairs.append((key, shown))
        return dict(pairs)


def inbox(name: str) -> str:
    """INBOX is case-insensitive (RFC 3501 5.1): a server may echo it as asked or as "INBOX"."""
    return "INBOX" if name.upper() == "INBOX" else name


def flag_list(flags: list) -> str:
    return "(" + " ".join(sorted((str(f) for f in flags), key=str.lower)) + ")"


def original_positions(expunges: list[int]) -> list[int]:
    """EXPUNGE sequence numbers as reported one after another -> the original positions they removed."""
    removed: list[int] = []
    for seq in expunges:
        # the message now at `seq` is the seq-th original position not yet removed
        position, alive = 0, 0
        while alive < seq:
            position += 1
            if position not in removed:
                alive += 1
        removed.append(position)
    return sorted(removed)
