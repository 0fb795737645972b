"""The standard library's imaplib against the server, over a real socket, across the command list."""

from __future__ import annotations

import asyncio
import imaplib
import re

import pytest

from .conftest import ALICE, ALICE_PW, make_message


def _run(lab, body):
    def client():
        c = imaplib.IMAP4(lab.host, lab.port, timeout=10)
        try:
            return body(c)
        finally:
            try:
                c.logout()
            except (imaplib.IMAP4.error, OSError):
                pass
    return asyncio.to_thread(client)


async def test_login_list_select_fetch(imap):
    for n in range(1, 4):
        imap.deliver(n)

    def body(c):
        assert "IDLE" in c.capabilities and "UIDPLUS" in c.capabilities
        typ, _ = c.login(ALICE, ALICE_PW)
        assert typ == "OK"
        typ, boxes = c.list()
        assert b'(\\HasNoChildren \\Sent) "/" Sent' in boxes
        typ, data = c.select("INBOX")
        assert data == [b"3"]
        typ, data = c.fetch("1:3", "(UID FLAGS RFC822.SIZE)")
        assert len(data) == 3 and b"UID 1 FLAGS (\\Recent)" in data[0]
        typ, data = c.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert data[0][1] == b"Subject: message 2\r\n\r\n"
        typ, data = c.fetch("2", "(RFC822)")
        assert data[0][1] == make_message(2)
        typ, data = c.search(None, "SEEN")
        assert data == [b"2"]
        typ, data = c.uid("SEARCH", None, "HEADER", "Message-ID", "<msg-3@corp.example>")
        assert data == [b"3"]
        typ, data = c.search(None, "SUBJECT", '"message 1"')
        assert data == [b"1"]
        typ, data = c.search(None, "FROM", "bob", "TEXT", "Body")
        assert data == [b"1 2 3"]
        return True
    assert await _run(imap, body)


async def test_store_copy_expunge_append(imap):
    for n in range(1, 4):
        imap.deliver(n)

    def body(c):
        c.login(ALICE, ALICE_PW)
        c.select("INBOX")
        typ, data = c.store("1", "+FLAGS", "(\\Flagged $Later)")
        assert typ == "OK" and b"\\Flagged" in data[0] and b"$Later" in data[0]
        typ, data = c.copy("1:2", "Trash")
        assert typ == "OK" and re.match(rb"\[COPYUID \d+ 1:2 1:2\]", data[0])
        c.store("2", "+FLAGS.SILENT", "(\\Deleted)")
        typ, data = c.expunge()
        assert data == [b"2"]
        typ, data = c.append("INBOX", "(\\Seen)", imaplib.Time2Internaldate(1_700_000_000), make_message(9))
        assert typ == "OK" and re.match(rb"\[APPENDUID \d+ 4\]", data[0])
        typ, data = c.status("INBOX", "(MESSAGES UIDNEXT UNSEEN)")
        assert data == [b"INBOX (MESSAGES 3 UIDNEXT 5 UNSEEN 2)"]
        typ, data = c.uid("FETCH", "4", "(FLAGS INTERNALDATE)")
        assert b"\\Seen" in data[0] and b"14-Nov-2023" in data[0]
        typ, data = c.uid("STORE", "3", "+FLAGS", "(\\Deleted)")
        assert typ == "OK"
        typ, data = c.uid("EXPUNGE", "1:4")
        assert typ == "OK"
        typ, data = c.uid("MOVE", "1", "Trash")
        assert typ == "OK"
        c.close()
        typ, data = c.select("Trash", readonly=True)
        assert data == [b"3"]
        typ, data = c.store("1", "+FLAGS", "(\\Seen)")
        assert typ == "NO"
        return True
    assert await _run(imap, body)
    assert [r.uid for r in imap.store.messages(ALICE, "INBOX")] == [4]


async def test_mailbox_management(imap):
    def body(c):
        c.login(ALICE, ALICE_PW)
        assert c.create("Projects/Recall")[0] == "OK"
        assert c.create("Projects")[0] == "NO"
        assert c.rename("Projects/Recall", "Projects/Done")[0] == "OK"
        typ, data = c.list("Projects/", "%")
        assert data == [b'(\\HasNoChildren) "/" Projects/Done']
        assert c.subscribe("Projects/Done")[0] == "OK"
        typ, data = c.lsub('""', "Projects/*")
        assert b'"/" Projects/Done' in data[0]
        assert c.unsubscribe("Projects/Done")[0] == "OK"
        assert c.create("&AMQ-rger")[0] == "OK"
        typ, data = c.list('""', "&AMQ-*")
        assert data == [b'(\\HasNoChildren) "/" &AMQ-rger']
        assert c.delete("Projects/Done")[0] == "OK"
        assert c.delete("INBOX")[0] == "NO"
        typ, data = c.namespace()
        assert data == [b'(("" "/")) NIL NIL']
        return True
    assert await _run(imap, body)
    assert "Ärger" in [b.name for b in imap.store.list_mailboxes(ALICE)]


async def test_wrong_password(imap):
    def body():
        c = imaplib.IMAP4(imap.host, imap.port, timeout=10)
        with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED"):
            c.login(ALICE, "wrong")
        c.logout()
        return True
    assert await asyncio.to_thread(body)


async def test_authenticate_plain(imap):
    def body(c):
        typ, _ = c.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{ALICE_PW}".encode())
        assert typ == "OK"
        return c.select("INBOX")[0] == "OK"
    assert await _run(imap, body)
