"""Sans-I/O tests of the session state machine: commands and store events in, responses out."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS, make_message
from .sansio import Client


def _store(n: int = 3) -> MemoryStore:
    store = MemoryStore()
    for user in USERS:
        store.ensure_user(user)
    for i in range(1, n + 1):
        store.deliver(ALICE, make_message(i))
    return store


def _client(store=None, **config) -> Client:
    return Client(store or _store(), Accounts(USERS), **config)


def test_greeting_and_capability():
    c = _client()
    assert c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    out = c.send("a CAPABILITY")
    caps = out.split(b"\r\n")[0].split()
    for cap in [b"LITERAL+", b"IDLE", b"UIDPLUS", b"MOVE", b"NAMESPACE", b"ENABLE", b"SPECIAL-USE", b"ID",
                b"UNSELECT", b"CHILDREN", b"SASL-IR", b"AUTH=PLAIN", b"CONDSTORE", b"QRESYNC"]:
        assert cap in caps
    assert b"STARTTLS" not in caps
    assert out.endswith(b"a OK Capability completed.\r\n")


def test_login_wrong_password_and_unknown_state():
    c = _client()
    assert c.send("a LOGIN alice@corp.example nope") == (
        b"a NO [AUTHENTICATIONFAILED] Authentication failed: wrong user name or password\r\n")
    assert c.send("b SELECT INBOX").startswith(b"b BAD ")
    assert c.send('c LOGIN "ALICE@corp.example" "alice-password"').startswith(b"c OK [CAPABILITY")


def test_authenticate_plain_with_and_without_initial_response():
    import base64
    token = base64.b64encode(b"\0alice@corp.example\0alice-password").decode()
    c = _client()
    assert c.send(f"a AUTHENTICATE PLAIN {token}").startswith(b"a OK")
    c = _client()
    assert c.send("a AUTHENTICATE PLAIN") == b"+ \r\n"
    assert c.send(token).startswith(b"a OK")
    c = _client()
    c.send("a AUTHENTICATE PLAIN")
    assert c.send("*").startswith(b"a BAD")
    assert c.send("b NOOP") == b"b OK NOOP completed.\r\n"


def test_select_responses():
    c = _client()
    c.login()
    out = c.send("s SELECT INBOX").decode()
    assert "* 3 EXISTS" in out and "* 3 RECENT" in out
    assert "* OK [UIDVALIDITY " in out and "* OK [UIDNEXT 4]" in out and "* OK [HIGHESTMODSEQ 4] Highest" in out
    assert "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]" in out
    assert out.endswith("s OK [READ-WRITE] Select completed.\r\n")
    # a second session gets no \Recent: exactly one session has it
    c2 = _client(c.session.store)
    c2.login()
    out = c2.send("s SELECT INBOX (CONDSTORE)").decode()
    assert "* 0 RECENT" in out and "* OK [HIGHESTMODSEQ 4] Highest" in out
    assert "* OK [CLOSED]" in c2.send("s EXAMINE INBOX").decode()


def test_bad_commands_keep_the_session_going():
    c = _client()
    c.login()
    assert c.send("a FOO").startswith(b"a BAD Unknown command")
    assert c.send("(((").startswith(b"* BAD")
    assert c.send("lonely") == b"lonely BAD Missing command name\r\n"
    assert c.send("").startswith(b"* BAD")
    assert c.send("b FETCH 1 FLAGS").startswith(b"b BAD")  # not selected
    c.send("s SELECT INBOX")
    assert c.send("c FETCH 1:9 FLAGS").startswith(b"c BAD")
    assert c.send("d FETCH 1 (FLAGS").startswith(b"d BAD")
    assert c.send("e SEARCH FROB").startswith(b"e BAD")
    assert c.send("f SEARCH CHARSET KOI8-R ALL").startswith(b"f NO [BADCHARSET")
    assert c.send("g NOOP") == b"g OK NOOP completed.\r\n"


def test_fetch_sets_seen_unless_peek():
    c = _client()
    c.login()
    c.send("s SELECT INBOX")
    out = c.send("f FETCH 1 BODY.PEEK[TEXT]")
    assert b"\\Seen" not in out
    out = c.send("f FETCH 1 BODY[TEXT]")
    assert b"* 1 FETCH (FLAGS (\\Seen \\Recent) BODY[TEXT] {20}\r\nBody of message 1.\r\n)" in out
    out = c.send("f UID FETCH 2 (RFC822.HEADER BODY[HEADER]<0.4>)")
    assert b"UID 2 FLAGS (\\Seen \\Recent) RFC822.HEADER {" in out and b"BODY[HEADER]<0> {4}\r\nDate" in out


def test_store_and_expunge_reach_another_session_at_the_right_time():
    store = _store()
    a, b = _client(store), _client(store)
    for c in (a, b):
        c.login()
        c.send("s SELECT INBOX")
    out = a.send("1 STORE 2 +FLAGS (\\Deleted)")
    assert b"* 2 FETCH (FLAGS (\\Deleted" in out
    assert b"* 2 FETCH (FLAGS (\\Deleted))" in b.send("n NOOP")
    a.send("2 EXPUNGE")
    # FETCH may not carry EXPUNGE; the message still has its number until then
    out = b.send("f FETCH 1:3 UID")
    assert b"EXPUNGE" not in out and b"* 3 FETCH (UID 3)" in out
    out = b.send("n NOOP")
    assert b"* 2 EXPUNGE" in out
    assert b"* 2 FETCH (UID 3)" in b.send("f FETCH 2 UID")


def test_qresync_vanished():
    store = _store(5)
    c = _client(store)
    c.login()
    assert c.send("e ENABLE QRESYNC") == b"* ENABLED QRESYNC\r\ne OK Enabled.\r\n"
    info = store.mailbox(ALICE, "INBOX")
    modseq = info.highestmodseq
    store.expunge(ALICE, "INBOX", [2, 3])
    store.store_flags(ALICE, "INBOX", [4], ["\\Flagged"], "add")
    out = c.send(f"s SELECT INBOX (QRESYNC ({info.uidvalidity} {modseq} 1:5))").decode()
    assert "* VANISHED (EARLIER) 2:3\r\n" in out
    assert re.search(r"\* 2 FETCH \(UID 4 FLAGS \(\\Flagged[^)]*\) MODSEQ \(\d+\)\)", out)
    store.expunge(ALICE, "INBOX", [5])
    out = c.send("n NOOP")
    assert b"* VANISHED 5\r\n" in out and re.search(rb"n OK \[HIGHESTMODSEQ \d+\] NOOP", out)
    # the last UID is gone too: VANISHED (EARLIER) must still name it (UIDNEXT bounds the range, not the view)
    out = c.send(f"v UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)").decode()
    assert "* VANISHED (EARLIER) 2:3,5\r\n" in out


def test_condstore_unchangedsince():
    store = _store()
    c = _client(store)
    c.login()
    out = c.send("s SELECT INBOX (CONDSTORE)").decode()
    high = int(re.search(r"HIGHESTMODSEQ (\d+)", out).group(1))
    store.store_flags(ALICE, "INBOX", [1], ["$Important"], "add")
    out = c.send(f"t STORE 1:2 (UNCHANGEDSINCE {high}) +FLAGS.SILENT (\\Flagged)").decode()
    assert "[MODIFIED 1]" in out
    assert re.search(r"\* 2 FETCH \(MODSEQ \(\d+\)\)", out)
    assert "* 1 FETCH (FLAGS (\\Recent $Important) MODSEQ" in out  # the other change, unsolicited
    out = c.send(f"f FETCH 1:* (FLAGS) (CHANGEDSINCE {high})").decode()
    assert "* 1 FETCH" in out and "* 2 FETCH" in out and "* 3 FETCH" not in out


def test_idle_push_and_done():
    store = _store()
    c = _client(store)
    c.login()
    c.send("s SELECT INBOX")
    assert c.send("i IDLE") == b"+ idling\r\n"
    store.deliver(ALICE, make_message(9))
    assert c.take() == b"* 4 EXISTS\r\n* 4 RECENT\r\n"
    store.expunge(ALICE, "INBOX", [1])
    assert c.take() == b"* 1 EXPUNGE\r\n* 3 RECENT\r\n"
    assert c.send("DONE") == b"i OK IDLE terminated.\r\n"


def test_search_keys():
    store = _store(4)
    store.store_flags(ALICE, "INBOX", [2], ["\\Seen", "\\Answered"], "add")
    c = _client(store)
    c.login()
    c.send("s SELECT INBOX")

    def search(q: str) -> str:
        out = c.send(f"x {q}").decode()
        assert out.endswith("x OK Search completed.\r\n"), out
        return next(line for line in out.split("\r\n") if line.startswith("* SEARCH"))
    assert search("SEARCH ALL") == "* SEARCH 1 2 3 4"
    assert search("SEARCH SEEN") == "* SEARCH 2"
    assert search("SEARCH NOT SEEN UNANSWERED") == "* SEARCH 1 3 4"
    assert search("SEARCH OR 1 3") == "* SEARCH 1 3"
    assert search("UID SEARCH UID 2:*") == "* SEARCH 2 3 4"
    assert search("SEARCH 2:3 (LARGER 10 SMALLER 100000)") == "* SEARCH 2 3"
    assert search("SEARCH SINCE 1-Jan-2000 BEFORE 1-Jan-2999") == "* SEARCH 1 2 3 4"
    assert search("SEARCH ON 1-Jan-2000") == "* SEARCH"
    assert search("SEARCH NEW") == "* SEARCH 1 3 4"
    assert search("SEARCH MODSEQ 1").startswith("* SEARCH 1 2 3 4 (MODSEQ ")


def test_list_and_status():
    store = _store()
    c = _client(store)
    c.login()
    assert c.send("c CREATE Projects/Recall").startswith(b"c OK")
    out = c.send('l LIST "" "*"').decode()
    assert '* LIST (\\HasChildren) "/" Projects\r\n' in out
    assert '* LIST (\\HasNoChildren) "/" Projects/Recall\r\n' in out
    assert '* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n' in out
    out = c.send('l LIST "" "%"').decode()
    assert "Projects/Recall" not in out and "Projects" in out
    out = c.send('l LIST "" "*" RETURN (SPECIAL-USE)').decode()
    assert "\\Trash" in out
    assert c.send('l LIST "" ""').startswith(b'* LIST (\\Noselect) "/" ""')
    out = c.send("t STATUS INBOX (MESSAGES UIDNEXT UNSEEN)").decode()
    assert out.startswith("* STATUS INBOX (MESSAGES 3 UIDNEXT 4 UNSEEN 3)")
    assert c.send("d DELETE Nope").startswith(b"d NO [NONEXISTENT]")


def test_append_with_literal_and_flags():
    store = _store(0)
    c = _client(store)
    c.login()
    raw = make_message(1)
    assert c.send(f'a APPEND INBOX (\\Seen $Work) "05-Nov-2026 10:00:00 +0100" {{{len(raw)}}}') == (
        b"+ Ready for literal data\r\n")
    out = c.send(raw + b"\r\n").decode()
    assert re.match(r"a OK \[APPENDUID \d+ 1\] Append completed.", out)
    rec = store.messages(ALICE, "INBOX")[0]
    assert rec.flags == {"\\Seen", "$Work"} and rec.internaldate.day == 5
    assert c.send(f"b APPEND Nope {{{len(raw)}+}}\r\n".encode() + raw + b"\r\n").startswith(b"b NO [TRYCREATE]")


def test_copy_and_move_give_copyuid():
    store = _store()
    c = _client(store)
    c.login()
    c.send("s SELECT INBOX")
    out = c.send("c COPY 1:2 Trash").decode()
    assert re.match(r"c OK \[COPYUID \d+ 1:2 1:2\] Copy completed.", out)
    out = c.send("m UID MOVE 3 Trash").decode()
    assert re.search(r"\* OK \[COPYUID \d+ 3 3\]", out) and "* 3 EXPUNGE" in out


def test_only_own_mailboxes():
    store = _store()
    c = _client(store)
    c.login("bob@corp.example", "bob-password")
    out = c.send("s SELECT INBOX")
    assert b"* 0 EXISTS" in out


vocabulary = st.sampled_from([
    "FETCH", "STORE", "SEARCH", "UID", "SELECT", "LIST", "STATUS", "APPEND", "COPY", "MOVE", "EXPUNGE", "IDLE",
    "DONE", "ENABLE", "QRESYNC", "CONDSTORE", "1", "1:*", "*", "2,3", "INBOX", "Trash", "(", ")", "\"", "\"x\"",
    "{3}", "{2+}", "BODY[]", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]<0.5>", "FLAGS", "+FLAGS", "(\\Seen)", "ALL",
    "OR", "NOT", "HEADER", "Message-ID", "<msg-1@corp.example>", "CHANGEDSINCE", "UNCHANGEDSINCE", "NIL", "\\",
    "\r\n", " ", "x", "a", "RETURN", "%", "BEFORE", "1-Jan-2026", "BODY[1.MIME]", "CLOSE", "UNSELECT",
])


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(vocabulary, min_size=1, max_size=8), min_size=1, max_size=6), st.binary(max_size=60))
def test_arbitrary_input_only_gets_protocol_answers(commands, noise):
    c = _client(_store(3), max_literal=1000)
    c.login()
    c.send("s SELECT INBOX")
    lines = [b"t%d " % i + " ".join(words).encode() + b"\r\n" for i, words in enumerate(commands)]
    for data in [*lines, noise, b"\r\nz NOOP\r\n"]:
        out = c.send(data) if data else b""
        assert b"SERVERBUG" not in out, out
    text = bytes(c.io.out)
    assert b"SERVERBUG" not in text


arg_text = st.text(alphabet=st.sampled_from(list(' ()[]<>{}"\\*%:,.+-0123456789AaBFHILMNOPRSTUVXY\x00\xe9')),
                   max_size=40)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(__import__("recall_lab.fake_servers.imap.session", fromlist=["COMMANDS"]).COMMANDS)),
       st.sampled_from(["", "UID "]), arg_text)
def test_every_command_with_random_arguments_answers_bad_or_no_never_crashes(name, prefix, args):
    if name in ("LOGOUT", "IDLE", "STARTTLS"):
        return
    if args.endswith("}"):  # a literal announcement would make the next line its data
        args += " x"
    c = _client(_store(2))
    c.login()
    c.send("s SELECT INBOX")
    out = c.send(f"t {prefix}{name} {args}".encode())
    assert b"SERVERBUG" not in out, out
    assert re.search(rb"(^|\r\n)(t (OK|NO|BAD)|\* BAD|\+ )", out), out
    assert c.send("z NOOP").endswith(b"z OK NOOP completed.\r\n")


def test_big_literals_refused_before_login_and_limits_apply_after():
    c = _client(max_literal=200_000)
    assert c.send("a LOGIN {100000}").startswith(b"a BAD [TOOBIG]")
    c.login()
    assert c.send("b APPEND INBOX {100000}") == b"+ Ready for literal data\r\n"
    assert c.send(b"x" * 100_000 + b"\r\n").startswith(b"b OK [APPENDUID")
    assert c.send("c APPEND INBOX {300000}").startswith(b"c BAD [TOOBIG]")


def test_own_store_response_is_not_repeated_as_an_update():
    store = _store()
    a, b = _client(store), _client(store)
    for c in (a, b):
        c.login()
        c.send("s SELECT INBOX")
    a.send("1 STORE 1 +FLAGS (\\Seen)")
    out = b.send("2 STORE 1 +FLAGS (\\Flagged)")
    assert out.count(b"* 1 FETCH") == 1 and b"\\Seen" in out and b"\\Flagged" in out


def test_starttls_discards_commands_pipelined_before_the_handshake():
    c = _client(tls_available=True, login_disabled_without_tls=True)
    assert b"STARTTLS" in c.greeting and b"LOGINDISABLED" in c.greeting
    out = c.send(b"a STARTTLS\r\nb LOGIN alice@corp.example alice-password\r\n")
    assert out == b"a OK Begin TLS negotiation now.\r\n" and c.io.tls_requested
    c.session.tls_started()
    assert c.send("c CAPABILITY").startswith(b"* CAPABILITY IMAP4rev1") and c.session.user is None
    out = c.send("d CAPABILITY")
    assert b"STARTTLS" not in out and b"LOGINDISABLED" not in out and b"AUTH=PLAIN" in out


def test_sort():
    store = _store(0)
    for n, (subject, body) in enumerate([("Re: banana", "x" * 50), ("apple", "x" * 10), ("[list] Cherry", "x" * 30)]):
        store.deliver(ALICE, make_message(n, subject=subject, body=body))
    c = _client(store)
    c.login()
    c.send("s SELECT INBOX")
    assert c.send("a SORT (SUBJECT) UTF-8 ALL").startswith(b"* SORT 2 1 3\r\n")
    assert c.send("a SORT (REVERSE SIZE) UTF-8 ALL").startswith(b"* SORT 1 3 2\r\n")
    assert c.send("a UID SORT (SIZE) US-ASCII NOT SUBJECT apple").startswith(b"* SORT 3 1\r\n")
    assert c.send("a SORT (ARRIVAL) KOI8-R ALL").startswith(b"a NO [BADCHARSET")
    assert c.send("a SORT (REVERSE) UTF-8 ALL").startswith(b"a BAD")


def test_create_special_use():
    store = _store(0)
    c = _client(store)
    c.login()
    assert c.send("c CREATE Archive (USE (\\Archive))").startswith(b"c OK")
    assert c.send('l LIST "" Archive').startswith(b'* LIST (\\HasNoChildren \\Archive) "/" Archive\r\n')
    assert store.mailbox(ALICE, "Archive").special_use == "\\Archive"


class _PeekingStore(MemoryStore):
    """A MemoryStore whose peek_recent is built from its own claims (public API only), for the tests below
    until the store implements MailStore.peek_recent itself."""

    def __init__(self) -> None:
        super().__init__()
        self.claims: dict[tuple[str, str], set[int]] = {}

    def claim_recent(self, user, mailbox, uids):
        got = super().claim_recent(user, mailbox, uids)
        self.claims.setdefault((user, mailbox), set()).update(got)
        return got

    def peek_recent(self, user, mailbox):
        return {r.uid for r in self.messages(user, mailbox)} - self.claims.get((user, mailbox), set())


def test_status_and_examine_show_recent_without_claiming_it():
    store = _PeekingStore()
    store.ensure_user(ALICE)
    for i in range(3):
        store.deliver(ALICE, make_message(i))
    c = _client(store)
    c.login()
    assert c.send("a STATUS INBOX (RECENT)").startswith(b"* STATUS INBOX (RECENT 3)")
    out = c.send("b EXAMINE INBOX")
    assert b"* 3 RECENT" in out
    assert b"* 1 FETCH (FLAGS (\\Recent))" in c.send("c FETCH 1 FLAGS")
    store.deliver(ALICE, make_message(9))
    assert b"* 4 EXISTS\r\n* 4 RECENT" in c.send("d NOOP")
    assert b"* 4 RECENT" in c.send("e SELECT INBOX")  # SELECT claims them...
    assert c.send("f STATUS INBOX (RECENT)").startswith(b"* STATUS INBOX (RECENT 0)")  # ...for good


def test_pipelined_login_then_big_append_is_judged_by_the_authenticated_limit():
    """F9: frames are read ahead of execution, but a literal must be judged by the state its command runs in."""
    c = _client(max_literal=200_000)
    out = c.send(b"a1 LOGIN alice@corp.example alice-password\r\na2 SELECT INBOX\r\na3 APPEND INBOX {100000}\r\n")
    assert b"a1 OK" in out and b"a2 OK" in out, out
    assert b"TOOBIG" not in out and out.endswith(b"+ Ready for literal data\r\n"), out
    assert c.send(b"x" * 100_000 + b"\r\n").startswith(b"* 4 EXISTS")
    # still over the authenticated limit: refused without waiting for the octets
    out = c.send(b"b1 NOOP\r\nb2 APPEND INBOX {300000}\r\n")
    assert out.endswith(b"b2 BAD [TOOBIG] literal of 300000 octets is over the limit of 200000\r\n"), out


def test_pipelined_failed_login_keeps_the_small_pre_auth_limit():
    c = _client(max_literal=200_000)
    out = c.send(b"a1 LOGIN alice@corp.example wrong\r\na2 APPEND INBOX {100000}\r\n")
    assert b"a1 NO" in out and b"a2 BAD [TOOBIG]" in out, out
    assert b"+ Ready" not in out
    # pipelined LITERAL+ data of a refused command is skipped, not run as commands
    out = c.send(b"a3 LOGIN alice@corp.example wrong\r\na4 APPEND INBOX {70000+}\r\n" + b"y" * 70000 + b"\r\n"
                 + b"a5 NOOP\r\n")
    assert b"a4 BAD [TOOBIG]" in out and out.endswith(b"a5 OK NOOP completed.\r\n"), out
