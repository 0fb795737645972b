"""IMAP4rev2 (RFC 9051) once a session sends `ENABLE IMAP4rev2`, without sockets: each difference from
IMAP4rev1, and that a rev1 session beside it (or without it) sees exactly what it saw before."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from recall_lab.fake_servers.accounts import Accounts
from recall_lab.fake_servers.imap import utf7
from recall_lab.fake_servers.store.base import DEFAULT_MAILBOXES
from recall_lab.fake_servers.store.memory import MemoryStore

from .conftest import ALICE, USERS, make_message
from .sansio import Client


def _store(messages: int = 3) -> MemoryStore:
    store = MemoryStore()
    store.ensure_user(ALICE)
    for n in range(1, messages + 1):
        store.deliver(ALICE, make_message(n))
    return store


def _client(store: MemoryStore, rev2: bool = True) -> Client:
    c = Client(store, Accounts(USERS))
    c.login()
    if rev2:
        assert c.send("e ENABLE IMAP4rev2") == b"* ENABLED IMAP4rev2\r\ne OK Enabled.\r\n"
    return c


def test_enable_is_case_insensitive_and_answers_the_announced_spelling() -> None:
    c = _client(_store(), rev2=False)
    assert c.send("e ENABLE imap4REV2 utf8=accept") == b"* ENABLED IMAP4rev2 UTF8=ACCEPT\r\ne OK Enabled.\r\n"


def test_enable_rev2_does_not_turn_condstore_on() -> None:
    store = _store()
    c = _client(store)
    c.send("s SELECT INBOX")
    other = _client(store, rev2=False)
    other.send("s SELECT INBOX")
    other.send("t STORE 1 +FLAGS (\\Flagged)")
    out = c.send("n NOOP")
    # no MODSEQ: CONDSTORE is not on; UID: an unsolicited FETCH carries it in rev2 (RFC 9051 7.5.2)
    assert b"* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\n" in out
    assert b"MODSEQ" not in out


def test_select_has_list_line_and_no_recent_or_unseen() -> None:
    store = _store()
    store.create_mailbox(ALICE, "INBOX/sub")
    c = _client(store)
    out = c.send("s SELECT INBOX")
    assert b"* 3 EXISTS\r\n" in out
    assert b'* LIST (\\HasChildren) "/" INBOX\r\n' in out
    assert b"RECENT" not in out and b"UNSEEN" not in out
    out = c.send("x EXAMINE Sent")
    assert b"* OK [CLOSED]" in out
    assert b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n' in out


def test_no_recent_flag_and_recent_left_for_rev1_sessions() -> None:
    store = _store()
    c = _client(store)
    c.send("s SELECT INBOX")
    assert b"\\Recent" not in c.send("f FETCH 1:* FLAGS")
    store.deliver(ALICE, make_message(4))
    out = c.send("n NOOP")
    assert out == b"* 4 EXISTS\r\nn OK NOOP completed.\r\n"
    assert b"\\Recent" not in c.send("f FETCH 4 FLAGS")
    rev1 = _client(store, rev2=False)
    out = rev1.send("s SELECT INBOX")
    assert b"* 4 RECENT\r\n" in out  # the rev2 session claimed none of them
    assert b"(FLAGS (\\Recent))" in rev1.send("f FETCH 4 FLAGS")


def test_search_answers_esearch() -> None:
    c = _client(_store())
    c.send("s SELECT INBOX")
    assert c.send("a SEARCH ALL") == b'* ESEARCH (TAG "a") ALL 1:3\r\na OK Search completed.\r\n'
    assert c.send("b UID SEARCH 2:3") == b'* ESEARCH (TAG "b") UID ALL 2:3\r\nb OK Search completed.\r\n'
    assert c.send("c UID SEARCH KEYWORD none") == b'* ESEARCH (TAG "c") UID\r\nc OK Search completed.\r\n'
    assert c.send("d SEARCH RETURN (COUNT) ALL") == b'* ESEARCH (TAG "d") COUNT 3\r\nd OK Search completed.\r\n'


def test_searchres_save_and_dollar() -> None:
    store = _store(5)
    c = _client(store)
    c.send("s SELECT INBOX")
    assert c.send("a SEARCH RETURN (SAVE) 2,4") == b"a OK Search completed.\r\n"  # SAVE alone: no ESEARCH
    assert c.send("f FETCH $ (UID)") == b"* 2 FETCH (UID 2)\r\n* 4 FETCH (UID 4)\r\nf OK Fetch completed.\r\n"
    assert c.send("b SEARCH $") == b'* ESEARCH (TAG "b") ALL 2,4\r\nb OK Search completed.\r\n'
    assert c.send("c UID SEARCH UID $") == b'* ESEARCH (TAG "c") UID ALL 2,4\r\nc OK Search completed.\r\n'
    out = c.send("d STORE $ +FLAGS.SILENT (\\Deleted)")
    assert out == b"d OK Store completed.\r\n"
    assert c.send("e COPY $ Trash").startswith(b"e OK [COPYUID ")
    c.send("x EXPUNGE")
    assert c.send("g FETCH $ (UID)") == b"g OK Fetch completed.\r\n"  # expunged messages leave $
    out = c.send("h SEARCH RETURN (MIN SAVE) ALL")
    assert out == b'* ESEARCH (TAG "h") MIN 1\r\nh OK Search completed.\r\n'
    assert c.send("i UID FETCH $ (UID)") == b"* 1 FETCH (UID 1)\r\ni OK Fetch completed.\r\n"
    c.send("s SELECT INBOX")  # a new selection empties $
    assert c.send("j FETCH $ (UID)") == b"j OK Fetch completed.\r\n"


def test_rev1_has_no_searchres() -> None:
    c = _client(_store(), rev2=False)
    c.send("s SELECT INBOX")
    assert c.send("a SEARCH RETURN (SAVE) ALL").startswith(b"a BAD ")
    assert c.send("b FETCH $ FLAGS").startswith(b"b BAD ")
    assert c.send("c SEARCH ALL") == b"* SEARCH 1 2 3\r\nc OK Search completed.\r\n"


def test_mailbox_names_are_utf8_both_ways() -> None:
    store = _store(0)
    c = _client(store)
    assert c.send('c CREATE "Bäh&x"').startswith(b"c OK ")
    out = c.send('l LIST "" "B*"')
    assert out == '* LIST (\\HasNoChildren) "/" "Bäh&x"\r\nl OK List completed.\r\n'.encode()
    assert b"* STATUS" in c.send('s STATUS "Bäh&x" (MESSAGES)')
    assert '"Bäh&x"'.encode() in c.send('t STATUS "Bäh&x" (MESSAGES)')
    assert c.send(b'u SELECT "\xff"').startswith(b"u NO ")  # not UTF-8
    rev1 = _client(store, rev2=False)
    assert b'"/" B&AOQ-h&-x\r\n' in rev1.send('l LIST "" "B*"')
    assert rev1.send("s SELECT B&AOQ-h&-x").startswith(b"* FLAGS")
    assert "Bäh&x" in [b.name for b in store.list_mailboxes(ALICE)]


def test_status_deleted_is_rev2_only() -> None:
    store = _store()
    c = _client(store)
    c.send("s SELECT INBOX")
    c.send("t STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    assert c.send("u STATUS INBOX (DELETED SIZE)").startswith(b"* STATUS INBOX (DELETED 2 SIZE ")
    out = c.send('l LIST "" INBOX RETURN (STATUS (DELETED))')
    assert b"* STATUS INBOX (DELETED 2)\r\n" in out
    rev1 = _client(store, rev2=False)
    assert rev1.send("u STATUS INBOX (DELETED)") == b"u BAD unknown STATUS item DELETED\r\n"


def test_extended_list_always_reports_children() -> None:
    store = _store(0)
    store.create_mailbox(ALICE, "a/b")
    c = _client(store)
    out = c.send('l LIST (SUBSCRIBED) "" "*" RETURN (SUBSCRIBED)')
    assert b'* LIST (\\Subscribed \\HasNoChildren) "/" INBOX\r\n' in out
    rev1 = _client(store, rev2=False)
    assert b'* LIST (\\Subscribed) "/" INBOX\r\n' in rev1.send('l LIST (SUBSCRIBED) "" "*" RETURN (SUBSCRIBED)')


def test_rev2_keeps_lsub_check_and_rfc822_items() -> None:
    c = _client(_store())
    assert c.send('l LSUB "" INBOX') == b'* LSUB () "/" INBOX\r\nl OK Lsub completed.\r\n'
    c.send("s SELECT INBOX")
    assert c.send("c CHECK").endswith(b"c OK NOOP completed.\r\n")
    assert b"RFC822.SIZE" in c.send("f FETCH 1 RFC822.SIZE")


# -- rev1 sessions see no change -----------------------------------------------------------------------------
_VOLATILE = re.compile(rb"UIDVALIDITY \d+|MAILBOXID \([^)]*\)|COPYUID \d+|APPENDUID \d+")

_REV1_COMMANDS = [
    "SELECT INBOX", "EXAMINE INBOX", "FETCH 1:* (FLAGS UID)", "SEARCH ALL", "SEARCH RECENT", "SEARCH NEW",
    "STORE 1 +FLAGS (\\Seen)", "STORE 2 -FLAGS (\\Seen)", "STORE 1 +FLAGS (\\Deleted)", "EXPUNGE", "NOOP",
    "STATUS INBOX (MESSAGES RECENT UNSEEN)", 'LIST "" *', 'LIST (SUBSCRIBED) "" * RETURN (CHILDREN)',
    'LSUB "" *', "UID SEARCH ALL", "SEARCH RETURN (SAVE) ALL", "FETCH $ FLAGS", "COPY 1 Trash",
    'CREATE "Bäh"', 'CREATE "&AOQ-x"', "CLOSE", "UNSELECT", "ENABLE CONDSTORE",
]


def _run_rev1(script: list[tuple[str, int]], with_rev2_neighbour: bool) -> list[bytes]:
    store = _store(3)
    rev1 = _client(store, rev2=False)
    neighbour = _client(store) if with_rev2_neighbour else None
    if neighbour is not None:
        neighbour.send("s SELECT INBOX")  # a rev2 session claims no \Recent
    out = []
    for i, (command, deliver) in enumerate(script):
        for _ in range(deliver):
            store.deliver(ALICE, make_message(100 + i))
        out.append(_VOLATILE.sub(b"X", rev1.send(f"t{i} {command}")))
        if neighbour is not None:
            neighbour.send("n NOOP")
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_REV1_COMMANDS), st.integers(0, 1)), min_size=1, max_size=12))
def test_rev1_session_sees_no_change(script: list[tuple[str, int]]) -> None:
    """A rev1 session answers the same whether or not a rev2 session works beside it on the same mailbox, and
    never with anything rev2 only (ESEARCH without RETURN, UTF-8 names, the SELECT LIST line)."""
    alone = _run_rev1(script, with_rev2_neighbour=False)
    assert alone == _run_rev1(script, with_rev2_neighbour=True)
    for (command, _), answer in zip(script, alone, strict=True):
        assert b"ESEARCH" not in answer
        assert not any(b >= 0x80 for b in answer if b), answer  # names stay modified UTF-7
        if command.startswith(("SELECT", "EXAMINE")) and b" OK [READ" in answer:
            assert b"* LIST" not in answer and b" RECENT\r\n" in answer


@settings(max_examples=80, deadline=None)
@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, blacklist_characters="/*%\\\"",
                             blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12))
def test_names_agree_between_rev1_and_rev2(name: str) -> None:
    """A name created in UTF-8 by a rev2 session is the modified UTF-7 name a rev1 session lists and selects."""
    if name.upper() == "INBOX" or name.strip() != name or name in DEFAULT_MAILBOXES:
        return  # INBOX and the default folders exist already: CREATE answers NO [ALREADYEXISTS]
    store = _store(0)
    c = _client(store)
    quoted = '"' + name + '"'
    assert c.send(f"c CREATE {quoted}").startswith(b"c OK "), name
    rev1 = _client(store, rev2=False)
    encoded = utf7.encode(name)
    assert rev1.send(f'x EXAMINE "{encoded}"').endswith(b"x OK [READ-ONLY] Examine completed.\r\n")
    assert c.send(f"y EXAMINE {quoted}").endswith(b"y OK [READ-ONLY] Examine completed.\r\n")


# -- message/global (RFC 6532), unsolicited FETCH, response text ---------------------------------------------
_GLOBAL_MESSAGE = (
    b"From: a@corp.example\r\nSubject: outer\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=bb\r\n\r\n--bb\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    b"--bb\r\nContent-Type: message/global\r\n\r\nFrom: c@corp.example\r\nSubject: inn\xc3\xa9r\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nbody \xc3\xa9\r\nline2\r\n--bb--\r\n")
# what Dovecot 2.3.19 answers in every session (it does not implement IMAP4rev2): a basic body
_REV1_STRUCTURE = (b'BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 2 0 NIL NIL NIL NIL) '
                   b'("message" "global" NIL NIL NIL "7bit" 96 NIL NIL NIL NIL) "mixed" ("boundary" "bb") NIL NIL NIL)')


def test_message_global_is_a_basic_body_in_rev1_and_a_message_in_rev2() -> None:
    store = _store(0)
    store.deliver(ALICE, _GLOBAL_MESSAGE)
    rev1 = _client(store, rev2=False)
    rev1.send("s SELECT INBOX")
    c = _client(store)
    c.send("s SELECT INBOX")
    assert rev1.send("f FETCH 1 BODYSTRUCTURE") == b"* 1 FETCH (" + _REV1_STRUCTURE + b")\r\nf OK Fetch completed.\r\n"
    out = c.send("f FETCH 1 (BODYSTRUCTURE BODY)")
    # RFC 9051 body-type-msg: basic fields, the envelope, the body, the line count
    assert (b'("message" "global" NIL NIL NIL "7bit" 96 (NIL {6}\r\ninn\xc3\xa9r ((NIL NIL "c" "corp.example")) '
            b'((NIL NIL "c" "corp.example")) ((NIL NIL "c" "corp.example")) NIL NIL NIL NIL NIL) '
            b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 14 1 NIL NIL NIL NIL) 5 NIL NIL NIL NIL)') in out
    assert b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 14 1) 5) "mixed")' in out  # BODY: no extensions
    # sections go inside it (section-msgtext: "top-level or MESSAGE/RFC822 or MESSAGE/GLOBAL part")
    out = c.send("f FETCH 1 (BODY.PEEK[2.TEXT] BODY.PEEK[2.1] BINARY.PEEK[2.1] BODY.PEEK[2.HEADER.FIELDS (SUBJECT)])")
    assert out.count(b"{14}\r\nbody \xc3\xa9\r\nline2") == 3
    assert b"BODY[2.HEADER.FIELDS (SUBJECT)] {19}\r\nSubject: inn\xc3\xa9r\r\n\r\n" in out
    assert rev1.send("f FETCH 1 BODY.PEEK[2.TEXT]") == b"* 1 FETCH (BODY[2.TEXT] {0}\r\n)\r\nf OK Fetch completed.\r\n"
    # the rev1 session's answer did not change after the rev2 one was made
    assert rev1.send("f FETCH 1 BODYSTRUCTURE") == b"* 1 FETCH (" + _REV1_STRUCTURE + b")\r\nf OK Fetch completed.\r\n"


def test_top_level_message_global_and_catenate_of_its_part() -> None:
    store = _store(0)
    store.deliver(ALICE, b"Subject: top\r\nMIME-Version: 1.0\r\nContent-Type: message/global\r\n\r\n"
                         b"From: c@corp.example\r\nSubject: inner\r\n\r\nbody\r\n")
    c = _client(store)
    c.send("s SELECT INBOX")
    out = c.send("f FETCH 1 BODY")
    assert out.startswith(b'* 1 FETCH (BODY ("message" "global" NIL NIL NIL "7bit" 46 (NIL "inner" ')
    assert out.endswith(b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1) 4))\r\nf OK Fetch completed.\r\n')
    assert b"BODY[1.TEXT] {6}\r\nbody\r\n" in c.send("f FETCH 1 BODY.PEEK[1.TEXT]")
    url = '"/INBOX/;UID=1/;SECTION=1.TEXT"'
    assert b"OK [APPENDUID" in c.send(f"a APPEND INBOX CATENATE (URL {url})")
    assert b"{6}\r\nbody\r\n" in c.send("f FETCH 2 BODY.PEEK[]")


def test_unsolicited_fetch_carries_uid() -> None:
    """RFC 9051 7.5.2: a flag change another session made, and NOTIFY's MessageNew FETCH, include UID; the
    answer to this session's own STORE is not unsolicited and stays as in rev1."""
    store = _store()
    c = _client(store)
    c.send("s SELECT INBOX")
    other = _client(store, rev2=False)
    other.send("s SELECT INBOX")
    other.send("t STORE 2 +FLAGS (\\Flagged)")
    assert c.send("n NOOP").startswith(b"* 2 FETCH (UID 2 FLAGS (\\Flagged))\r\n")
    assert c.send("t STORE 1 +FLAGS (\\Seen)").startswith(b"* 1 FETCH (FLAGS (\\Seen))\r\n")
    assert other.send("n NOOP").startswith(b"* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n")  # rev1: no UID
    assert b"n OK" in c.send("n NOTIFY SET (SELECTED (MessageNew (FLAGS) MessageExpunge FlagChange))")
    store.deliver(ALICE, make_message(9))
    assert c.send("n NOOP").startswith(b"* 4 EXISTS\r\n* 4 FETCH (UID 4 FLAGS ())\r\n")


def test_response_text_is_7_bit_until_rev2() -> None:
    """IMAP4rev1's resp-text is 7-bit; after ENABLE IMAP4rev2 it may carry UTF-8 (RFC 9051 appendix E, 24)."""
    store = _store()
    rev1 = _client(store, rev2=False)
    assert rev1.send("s SELECT &AOk-") == b"s NO [NONEXISTENT] Mailbox doesn't exist: \\xe9\r\n"
    c = _client(store)
    assert c.send('s SELECT "\xe9"') == "s NO [NONEXISTENT] Mailbox doesn't exist: \xe9\r\n".encode()
