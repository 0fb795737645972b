"""The command script of the differential test, in sections; each section runs on a fresh account.

A step is (connection, command): connections "A" and "B" are opened on first use (B is a second session of
the same user). `${user}`, `${password}` and `${hms:MAILBOX}`/`${uidvalidity:MAILBOX}` (the last value that
server reported for the mailbox; `${hms_next:MAILBOX}` is one more) are filled in per server. `lit(data)` writes a synchronising literal,
`lit(data, plus=True)` a LITERAL+ one. `Idle(...)` idles on one connection while the other runs a command,
and ends the IDLE once the push arrived. `Raw(...)` sends bytes as they are (for lines with no tag).
"""

from __future__ import annotations

from dataclasses import dataclass

# Internal dates for APPEND: well in the past (Dovecot replaces a future one by the time of arrival) and near
# midday UTC (so SINCE/BEFORE/ON fall on the same calendar day in any zone).
DATE = '"20-Nov-2020 12:00:00 +0000"'
DATE_EARLY = '"01-Jan-2020 12:30:00 +0100"'

PLAIN = (
    b"From: Dave <dave@mail.example>\r\n"
    b"To: Alice <alice@corp.example>\r\n"
    b"Cc: bob@corp.example\r\n"
    b"Subject: Plain hello\r\n"
    b"Date: Tue, 24 Nov 2026 08:00:00 +0000\r\n"
    b"Message-ID: <plain@mail.example>\r\n"
    b"\r\n"
    b"Hello Alice,\r\n"
    b"the needle is in this line.\r\n"
    b"Dave\r\n"
)

MULTIPART = (
    b"From: erin@mail.example\r\n"
    b"To: alice@corp.example\r\n"
    b"Subject: Quarterly report\r\n"
    b"Date: Mon, 23 Nov 2026 17:45:10 -0500\r\n"
    b"Message-ID: <report@mail.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"This is a multi-part message in MIME format.\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b'Content-Type: text/plain; charset="us-ascii"\r\n'
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"\r\n"
    b"Figures attached.\r\n"
    b"--inner\r\n"
    b'Content-Type: text/html; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"<p>Figures attached.</p>\r\n"
    b"--inner--\r\n"
    b"\r\n"
    b"--outer\r\n"
    b'Content-Type: application/octet-stream; name="q3.bin"\r\n'
    b'Content-Disposition: attachment; filename="q3.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAwQFBgcICQ==\r\n"
    b"--outer--\r\n"
)

UTF8 = (
    "From: =?utf-8?q?J=C3=BCrgen?= <jurgen@mail.example>\r\n"
    "To: alice@corp.example\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\r\n"
    "Date: Sun, 22 Nov 2026 09:00:00 +0100\r\n"
    "Message-ID: <utf8@mail.example>\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: text/plain; charset="utf-8"\r\n'
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Viele Grüße aus Köln – the recall test.\r\n"
).encode()


FORWARD = (
    b"From: bob@corp.example\r\n"
    b"To: alice@corp.example\r\n"
    b"Subject: Fwd: Plain hello\r\n"
    b"Date: Tue, 24 Nov 2026 09:15:00 +0000\r\n"
    b"Message-ID: <fwd@corp.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="fwd"\r\n'
    b"\r\n"
    b"--fwd\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"See below.\r\n"
    b"--fwd\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    + PLAIN
    + b"--fwd--\r\n"
)


def lit(data: bytes, plus: bool = False) -> bytes:
    return b"{%d%s}\r\n" % (len(data), b"+" if plus else b"") + data


@dataclass(frozen=True)
class Idle:
    """`conn` idles; `other` runs `command`; the IDLE ends once `conn` saw `until` (or after a timeout)."""

    conn: str
    other: str
    command: str | bytes
    until: bytes = b"EXISTS"


@dataclass(frozen=True)
class Raw:
    """Bytes sent as they are; whatever they provoke is recorded with the next command's responses."""

    conn: str
    data: bytes


def login(conn: str = "A") -> tuple[str, str]:
    return (conn, "LOGIN ${user} ${password}")


def append(mailbox: str, message: bytes, flags: str = "", date: str = DATE, plus: bool = False) -> bytes:
    head = f"APPEND {mailbox}" + (f" ({flags})" if flags is not None else "") + (f" {date}" if date else "")
    return head.encode() + b" " + lit(message, plus)


def seeded(conn: str = "A") -> list:
    """Login, then three messages in INBOX: PLAIN (\\Seen), MULTIPART (unseen), UTF8 (\\Flagged $Important)."""
    return [
        login(conn),
        (conn, append("INBOX", PLAIN, "\\Seen")),
        (conn, append("INBOX", MULTIPART, "", DATE_EARLY)),
        (conn, append("INBOX", UTF8, "\\Flagged $Important", DATE, plus=True)),
    ]


#: Sections where two sessions race for \\Recent: which one is "first notified" of a message is not comparable.
RECENT_RACES = frozenset({"other-session"})

SECTIONS: dict[str, list] = {
    "auth-and-capabilities": [
        ("A", "CAPABILITY"),
        ("A", "NOOP"),
        ("A", "SELECT INBOX"),  # not yet authenticated
        ("A", "LOGIN ${user} wrong-password"),
        ("A", 'LOGIN "${user}" "${password}"'),
        ("A", "CAPABILITY"),
        ("A", "LOGIN ${user} ${password}"),  # already authenticated
        ("A", "NAMESPACE"),
        ("A", 'ID ("name" "recall-lab-difftest" "version" "1")'),
        ("A", "ID NIL"),
        ("A", "ENABLE CONDSTORE"),
        ("A", "NOOP"),
        ("A", "CHECK"),  # only valid in the selected state
        ("A", "LOGOUT"),
    ],
    "authenticate-plain": [
        ("A", "AUTHENTICATE PLAIN ${sasl_wrong}"),
        ("A", "AUTHENTICATE PLAIN ${sasl_plain}"),  # SASL-IR
        ("A", "LOGOUT"),
        Raw("B", b"b1 AUTHENTICATE PLAIN\r\n"),  # without SASL-IR: "+", then the response line
        Raw("B", b"${sasl_plain}\r\n"),
        ("B", "NOOP"),
        Raw("C", b"c1 AUTHENTICATE PLAIN\r\n"),
        Raw("C", b"*\r\n"),  # the client cancels the exchange
        ("C", "NOOP"),
        ("C", "AUTHENTICATE X-UNKNOWN"),
        ("C", "LOGIN ${lit:user} ${lit:password}"),  # synchronising literals
        ("C", "SELECT INBOX"),
        ("C", "LOGOUT"),
    ],
    "list-and-mailboxes": [
        login(),
        ("A", 'LIST "" "*"'),
        ("A", 'LIST "" "%"'),
        ("A", 'LIST "" ""'),
        ("A", "SUBSCRIBE INBOX"),  # a fresh account's subscriptions are server policy; make them agree
        ("A", 'LSUB "" "*"'),
        ("A", "CREATE Work"),
        ("A", "CREATE Work/Projects"),
        ("A", "CREATE Work"),
        ("A", "CREATE INBOX"),
        ("A", 'CREATE "Spaced Name"'),
        ("A", "CREATE &AMQ-rger"),  # modified UTF-7 for "Ärger"
        ("A", 'LIST "" "*"'),
        ("A", 'LIST "" "Work*"'),
        ("A", 'LIST "Work/" "%"'),
        ("A", 'LIST "" "W%"'),
        ("A", 'LIST "" "nothing-like-this"'),
        ("A", "SUBSCRIBE Work/Projects"),
        ("A", 'LSUB "" "*"'),
        ("A", "UNSUBSCRIBE Work/Projects"),
        ("A", 'LSUB "" "Work*"'),
        ("A", "STATUS Work (MESSAGES RECENT UIDNEXT UNSEEN UIDVALIDITY)"),
        ("A", "STATUS Nonexistent (MESSAGES)"),
        ("A", "RENAME Work Archive"),
        ("A", 'LIST "" "*"'),
        ("A", "RENAME Nonexistent Other"),
        ("A", "CREATE Other"),
        ("A", "RENAME Archive Other"),
        ("A", "DELETE Archive/Projects"),
        ("A", "DELETE Archive"),
        ("A", "DELETE Nonexistent"),
        ("A", "DELETE INBOX"),
        ("A", 'DELETE "Spaced Name"'),
        ("A", 'LIST "" "*"'),
        ("A", "LOGOUT"),
    ],
    "append": [
        login(),
        ("A", "STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN)"),
        ("A", append("INBOX", PLAIN, "\\Seen")),
        ("A", append("INBOX", MULTIPART, None, None)),
        ("A", append("INBOX", UTF8, "\\Flagged $Important", DATE_EARLY, plus=True)),
        ("A", append("Nonexistent", PLAIN)),
        ("A", append("Sent", PLAIN, "\\Seen \\Draft")),
        ("A", "STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN)"),
        ("A", "STATUS Sent (MESSAGES UIDNEXT UNSEEN)"),
        ("A", "SELECT INBOX"),
        ("A", "FETCH 1:* (UID FLAGS RFC822.SIZE)"),
        ("A", "FETCH 1,3 INTERNALDATE"),
        ("A", "LOGOUT"),
    ],
    "fetch": [
        *seeded(),
        ("A", "SELECT INBOX"),
        ("A", "FETCH 1:* (FLAGS UID RFC822.SIZE INTERNALDATE)"),
        ("A", "FETCH 1:3 ENVELOPE"),
        ("A", "FETCH 1:3 BODYSTRUCTURE"),
        ("A", "FETCH 2 BODY"),
        ("A", "FETCH 1 FAST"),
        ("A", "FETCH 1 ALL"),
        ("A", "FETCH 1 FULL"),
        ("A", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])"),
        ("A", "FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT FROM CC)])"),
        ("A", "FETCH 1 (BODY.PEEK[HEADER])"),
        ("A", "FETCH 1 (BODY.PEEK[TEXT])"),
        ("A", "FETCH 1 (BODY.PEEK[]<0.20>)"),
        ("A", "FETCH 1 (BODY.PEEK[TEXT]<6.10>)"),
        ("A", "FETCH 1 (BODY.PEEK[TEXT]<500.10>)"),
        ("A", "FETCH 2 (BODY.PEEK[1])"),
        ("A", "FETCH 2 (BODY.PEEK[1.1] BODY.PEEK[1.2])"),
        ("A", "FETCH 2 (BODY.PEEK[1.2.MIME] BODY.PEEK[2.MIME])"),
        ("A", "FETCH 2 (BODY.PEEK[2])"),
        ("A", "FETCH 2 (BODY.PEEK[3])"),
        ("A", "FETCH 1 (BODY.PEEK[1])"),
        ("A", "FETCH 1 (RFC822.HEADER)"),
        ("A", "FETCH 1:* FLAGS"),
        ("A", "FETCH 2 (BODY[1.1])"),  # no PEEK: sets \Seen
        ("A", "FETCH 2 FLAGS"),
        ("A", "FETCH 3 RFC822.TEXT"),  # sets \Seen too
        ("A", "FETCH 3 RFC822"),
        ("A", "UID FETCH 1:* (FLAGS)"),
        ("A", "UID FETCH 2 (UID RFC822.SIZE)"),
        ("A", "UID FETCH 99 FLAGS"),
        ("A", "UID FETCH 2:* FLAGS"),
        ("A", "FETCH 4 FLAGS"),
        ("A", "FETCH * FLAGS"),
        ("A", append("INBOX", FORWARD, "\\Seen")),
        ("A", "FETCH 4 (BODYSTRUCTURE BODY RFC822.SIZE)"),
        ("A", "FETCH 4 (ENVELOPE)"),
        ("A", "FETCH 4 (BODY[2.HEADER] BODY[2.TEXT] BODY[2.1] BODY[2.MIME])"),
        ("A", "FETCH 4 (BODY.PEEK[2.HEADER.FIELDS (SUBJECT)] BODY.PEEK[1]<0.3>)"),
        ("A", "SEARCH BODY needle"),
        ("A", "SEARCH HEADER Subject Fwd"),
        ("A", "FETCH 1 (FLAGS BOGUS)"),
        ("A", "FETCH 1 BODY[4.X]"),
        ("A", "LOGOUT"),
    ],
    "search": [
        *seeded(),
        ("A", "SELECT INBOX"),
        ("A", "SEARCH ALL"),
        ("A", "SEARCH SEEN"),
        ("A", "SEARCH UNSEEN"),
        ("A", "SEARCH FLAGGED"),
        ("A", "SEARCH UNFLAGGED"),
        ("A", "SEARCH KEYWORD $Important"),
        ("A", "SEARCH UNKEYWORD $Important"),
        ("A", "SEARCH ANSWERED"),
        ("A", "SEARCH UNANSWERED"),
        ("A", "SEARCH DELETED"),
        ("A", "SEARCH UNDELETED"),
        ("A", "SEARCH DRAFT"),
        ("A", "SEARCH NEW"),
        ("A", "SEARCH OLD"),
        ("A", "SEARCH RECENT"),
        ("A", 'SEARCH SUBJECT "plain"'),
        ("A", "SEARCH SUBJECT report"),
        ("A", "SEARCH FROM dave"),
        ("A", "SEARCH FROM mail.example"),
        ("A", "SEARCH TO alice"),
        ("A", "SEARCH CC bob"),
        ("A", "SEARCH BCC anyone"),
        ("A", "SEARCH HEADER Message-ID <report@mail.example>"),
        ("A", 'SEARCH HEADER MIME-Version ""'),
        ("A", "SEARCH BODY needle"),
        ("A", "SEARCH BODY Figures"),
        ("A", "SEARCH TEXT needle"),
        ("A", "SEARCH TEXT Quarterly"),
        ("A", "SEARCH OR FROM dave FROM erin"),
        ("A", "SEARCH NOT SEEN"),
        ("A", "SEARCH NOT (FROM dave SEEN)"),
        ("A", "SEARCH (FROM dave) (SEEN)"),
        ("A", "SEARCH LARGER 1000"),
        ("A", "SEARCH SMALLER 400"),
        ("A", "SEARCH SINCE 1-Jan-2020"),
        ("A", "SEARCH SINCE 20-Nov-2020"),
        ("A", "SEARCH BEFORE 20-Nov-2020"),
        ("A", "SEARCH ON 1-Jan-2020"),
        ("A", "SEARCH ON 20-Nov-2020"),
        ("A", "SEARCH SENTSINCE 23-Nov-2026"),
        ("A", "SEARCH SENTBEFORE 23-Nov-2026"),
        ("A", "SEARCH SENTON 23-Nov-2026"),
        ("A", "SEARCH 2:3"),
        ("A", "SEARCH 2:*"),
        ("A", "SEARCH UID 1,3"),
        ("A", "SEARCH UID 2:* SEEN"),
        ("A", b"SEARCH CHARSET UTF-8 SUBJECT " + lit("Grüße".encode())),
        ("A", b"SEARCH CHARSET UTF-8 BODY " + lit("Köln".encode())),
        ("A", "SEARCH CHARSET UTF-8 SUBJECT Koln"),
        ("A", "SEARCH CHARSET X-UNKNOWN ALL"),
        ("A", "SEARCH SUBJECT"),
        ("A", "SEARCH BOGUSKEY"),
        ("A", "UID SEARCH ALL"),
        ("A", "UID SEARCH UNSEEN"),
        ("A", "UID SEARCH HEADER Message-ID <utf8@mail.example>"),
        ("A", "LOGOUT"),
    ],
    "store": [
        *seeded(),
        ("A", "SELECT INBOX"),
        ("A", "STORE 1 +FLAGS (\\Answered)"),
        ("A", "STORE 1 -FLAGS (\\Seen)"),
        ("A", "STORE 1 FLAGS (\\Seen \\Draft)"),
        ("A", "STORE 1:3 +FLAGS.SILENT (\\Deleted)"),
        ("A", "FETCH 1:3 (UID FLAGS)"),
        ("A", "UID STORE 2 -FLAGS.SILENT (\\Deleted)"),
        ("A", "UID STORE 1:3 -FLAGS (\\Deleted)"),
        ("A", "STORE 2 +FLAGS (custom-keyword)"),
        ("A", "STORE 2 +FLAGS ($Important)"),
        ("A", "FETCH 1:3 FLAGS"),
        ("A", "SEARCH KEYWORD custom-keyword"),
        ("A", "STORE 2 -FLAGS (custom-keyword $Important)"),
        ("A", "STORE 2 FLAGS ()"),
        ("A", "STORE 9 +FLAGS (\\Seen)"),
        ("A", "STORE 1 BOGUS (\\Seen)"),
        ("A", "LOGOUT"),
    ],
    "copy-move-expunge": [
        *seeded(),
        ("A", "CREATE Work"),
        ("A", "SELECT INBOX"),
        ("A", "COPY 1:2 Work"),
        ("A", "UID COPY 3 Work"),
        ("A", "COPY 1 Nonexistent"),
        ("A", "STATUS Work (MESSAGES UIDNEXT UNSEEN RECENT)"),
        ("A", "MOVE 2 Work"),
        ("A", "FETCH 1:* (UID FLAGS)"),
        ("A", "UID MOVE 3 Work"),
        ("A", "UID MOVE 99 Work"),
        ("A", "MOVE 1 Nonexistent"),
        ("A", "STATUS INBOX (MESSAGES UIDNEXT)"),
        ("A", "SELECT Work"),
        ("A", "FETCH 1:* (UID FLAGS INTERNALDATE)"),
        ("A", "STORE 1,3,5 +FLAGS.SILENT (\\Deleted)"),
        ("A", "EXPUNGE"),
        ("A", "FETCH 1:* (UID FLAGS)"),
        ("A", "STORE 1 +FLAGS.SILENT (\\Deleted)"),
        ("A", "UID EXPUNGE 1:3"),
        ("A", "STORE 1:* +FLAGS.SILENT (\\Deleted)"),
        ("A", "UID EXPUNGE 4"),
        ("A", "CLOSE"),
        ("A", "STATUS Work (MESSAGES UIDNEXT)"),
        ("A", "EXPUNGE"),
        ("A", "LOGOUT"),
    ],
    "examine-close-unselect": [
        *seeded(),
        ("A", "EXAMINE INBOX"),
        ("A", "FETCH 2 (BODY[TEXT])"),  # read-only: no \Seen
        ("A", "FETCH 2 FLAGS"),
        ("A", "UNSELECT"),
        ("A", "FETCH 1 FLAGS"),
        ("A", "SELECT INBOX"),
        ("A", "STORE 1 +FLAGS.SILENT (\\Deleted)"),
        ("A", "UNSELECT"),
        ("A", "STATUS INBOX (MESSAGES)"),
        ("A", "SELECT INBOX"),
        ("A", "CLOSE"),
        ("A", "STATUS INBOX (MESSAGES)"),
        ("A", "CLOSE"),
        ("A", "SELECT Nonexistent"),
        ("A", "FETCH 1 FLAGS"),
        ("A", "LOGOUT"),
    ],
    "other-session": [
        *seeded(),
        login("B"),
        ("A", "SELECT INBOX"),
        ("B", "SELECT INBOX"),
        ("B", "STORE 2 +FLAGS (\\Seen)"),
        ("A", "NOOP"),
        ("B", append("INBOX", PLAIN, "")),
        ("A", "NOOP"),
        ("B", "STORE 1 +FLAGS.SILENT (\\Deleted)"),
        ("B", "EXPUNGE"),
        ("A", "FETCH 1:* (UID FLAGS)"),  # no EXPUNGE may be sent during FETCH
        ("A", "STORE 2 +FLAGS (\\Flagged)"),  # ... nor during STORE
        ("A", "SEARCH FLAGGED"),  # ... nor during SEARCH (whether an expunged one matches is up to the server)
        ("A", "NOOP"),
        ("A", "FETCH 1:* UID"),
        ("B", "UID MOVE 3 Trash"),
        ("A", "CHECK"),
        Idle("A", "B", append("INBOX", UTF8, "")),
        Idle("A", "B", "UID STORE 2 +FLAGS (\\Answered)", until=b"FETCH"),
        Idle("A", "B", "UID MOVE 2 Trash", until=b"EXPUNGE"),
        ("A", "FETCH 1:* (UID FLAGS)"),
        ("A", "LOGOUT"),
        ("B", "LOGOUT"),
    ],
    "condstore-qresync": [
        *seeded(),
        ("A", "SELECT INBOX (CONDSTORE)"),
        ("A", "FETCH 1:* (UID FLAGS MODSEQ)"),
        ("A", "STORE 2 +FLAGS (\\Answered)"),
        ("A", "FETCH 2 (MODSEQ)"),
        ("A", "FETCH 1:* (FLAGS) (CHANGEDSINCE ${hms:INBOX})"),
        ("A", "SEARCH MODSEQ ${hms_next:INBOX}"),
        ("A", "UID STORE 1 (UNCHANGEDSINCE ${hms:INBOX}) +FLAGS (\\Flagged)"),
        ("A", "UID STORE 2 (UNCHANGEDSINCE 1) +FLAGS (\\Flagged)"),
        ("A", "STATUS INBOX (HIGHESTMODSEQ MESSAGES)"),
        ("A", "ENABLE QRESYNC"),
        ("A", "UNSELECT"),
        ("A", "SELECT INBOX (QRESYNC (${uidvalidity:INBOX} ${hms:INBOX}))"),
        ("A", "UID STORE 1 (UNCHANGEDSINCE ${hms:INBOX}) +FLAGS.SILENT (\\Deleted)"),  # FETCH MODSEQ anyway
        ("A", "EXPUNGE"),
        ("A", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)"),
        ("A", "UNSELECT"),
        ("A", "SELECT INBOX (QRESYNC (${uidvalidity:INBOX} 1 1:10))"),
        login("B"),
        ("B", "SELECT INBOX"),
        # the recall path: another session (or the store) deletes a message while A idles with QRESYNC on
        Idle("A", "B", "UID STORE 3 +FLAGS.SILENT (\\Deleted)", until=b"FETCH"),
        Idle("A", "B", "UID EXPUNGE 3", until=b"VANISHED"),
        ("A", "UID FETCH 1:10 (FLAGS) (CHANGEDSINCE 1 VANISHED)"),  # not 1:*: "*" is now UID 2
        ("A", "LOGOUT"),
        ("B", "LOGOUT"),
    ],
    "edge-cases": [
        *seeded(),
        ("A", "CREATE Parent"),
        ("A", "CREATE Parent/Child"),
        ("A", 'LIST "" "Parent*"'),
        ("A", "SELECT INBOX"),
        ("A", "UID FETCH 4:* UID"),  # "*" is the highest UID in use: 4:* means 3:4
        ("A", "UID SEARCH UID 4:*"),
        ("A", "FETCH 3:* UID"),
        ("A", "SEARCH 1,3:*"),
        ("A", "SEARCH NOT UID 2"),
        ("A", "SEARCH OR OR SEEN FLAGGED UID 2"),
        ("A", "SEARCH LARGER 231 SMALLER 233"),  # exactly 232 octets: neither larger nor smaller
        ("A", "SEARCH HEADER X-Nothing-Like-This \"\""),
        ("A", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (X-NOTHING)])"),
        ("A", "STORE 1 +FLAGS (\\SEEN \\flagged)"),  # flag names are case-insensitive
        ("A", "COPY 1 INBOX"),  # into the selected mailbox itself: EXISTS follows
        ("A", "MOVE 1:2 Parent/Child"),
        ("A", "STATUS INBOX (MESSAGES UIDNEXT)"),  # STATUS of the selected mailbox
        ("A", "EXPUNGE"),  # nothing \Deleted: no EXPUNGE responses
        ("A", "ENABLE X-NOT-A-CAPABILITY"),
        ("A", "select inbox"),  # commands, and the name INBOX, are case-insensitive
        ("A", "fetch 1 (flags uid)"),
        ("A", "STATUS iNbOx (MESSAGES)"),
        ("A", b"CREATE {5}\r\nWork2"),  # a mailbox name as a synchronising literal
        ("A", 'LIST "" {5}\r\nWork2'),
        Raw("A", b"p1 NOOP\r\np2 UID SEARCH ALL\r\np3 CHECK\r\n"),  # pipelined: answered in order
        ("A", "NOOP"),
        ("A", "SELECT INBOX (CONDSTORE)"),
        ("A", "UID STORE 3 (UNCHANGEDSINCE 0) +FLAGS (\\Answered)"),  # 0 always fails (RFC 7162 3.1.3)
        ("A", "LOGOUT"),
    ],
    "lsub-unsubscribed-parent": [
        login(),
        ("A", "CREATE Parent"),
        ("A", "CREATE Parent/Child"),
        ("A", "SUBSCRIBE INBOX"),  # a fresh account's subscriptions are server policy; make them agree
        ("A", "SUBSCRIBE Parent/Child"),
        ("A", 'LSUB "" "%"'),  # Parent is not subscribed but has a subscribed child: \\Noselect (RFC 3501 6.3.9)
        ("A", 'LSUB "" "Parent/%"'),
        ("A", 'LSUB "" "*"'),
        ("A", "LOGOUT"),
    ],
    "bad-input": [
        login(),
        ("A", "FOO"),
        ("A", "FETCH"),
        ("A", "SELECT"),
        ("A", "SELECT INBOX"),
        ("A", "FETCH 0 FLAGS"),
        ("A", "FETCH 1 FLAGS"),
        ("A", "FETCH x FLAGS"),
        ("A", "UID"),
        ("A", "UID FOO 1"),
        ("A", "STORE 1"),
        ("A", "LIST"),
        ("A", 'LIST "" "*" extra'),
        ("A", 'CREATE "unterminated'),
        ("A", b'APPEND INBOX "not a date" ' + lit(PLAIN)),
        ("A", b"APPEND INBOX (\\Bogus) " + lit(PLAIN)),
        ("A", b"SEARCH SUBJECT " + b"x" * 70_000),  # a line over 64 KiB: BAD, and the connection goes on
        ("A", "NOOP"),
        Raw("A", b"NOOP\r\n"),  # a tag but no command
        ("A", "NOOP"),
        Raw("A", b"\r\n"),
        ("A", "NOOP"),
        ("A", "LOGOUT"),
    ],
}
