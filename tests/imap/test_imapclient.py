"""imapclient against the server over a real socket: the command list, IDLE pushes, CONDSTORE and QRESYNC."""

from __future__ import annotations

import asyncio
import time

from imapclient import IMAPClient

from .conftest import ALICE, ALICE_PW, make_message


def _connect(lab) -> IMAPClient:
    c = IMAPClient(lab.host, port=lab.port, ssl=False, timeout=10)
    c.login(ALICE, ALICE_PW)
    return c


async def test_folders_and_messages(imap):
    for n in range(1, 6):
        imap.deliver(n)

    def body():
        with _connect(imap) as c:
            assert c.has_capability("MOVE") and c.has_capability("QRESYNC")
            folders = {name: flags for flags, _, name in c.list_folders()}
            assert b"\\Sent" in folders["Sent"] and b"\\Trash" in folders["Trash"]
            assert c.find_special_folder(b"\\Sent") == "Sent"
            info = c.select_folder("INBOX")
            assert info[b"EXISTS"] == 5 and info[b"UIDNEXT"] == 6 and b"\\*" in info[b"PERMANENTFLAGS"]
            uids = c.search(["NOT", "DELETED"])
            assert uids == [1, 2, 3, 4, 5]
            data = c.fetch(uids, ["ENVELOPE", "BODYSTRUCTURE", "INTERNALDATE", "RFC822.SIZE", "FLAGS"])
            env = data[3][b"ENVELOPE"]
            assert env.subject == b"message 3" and env.from_[0].mailbox == b"bob"
            assert data[3][b"RFC822.SIZE"] == len(make_message(3))
            assert data[3][b"BODYSTRUCTURE"][0] == b"text"
            assert c.fetch([2], ["BODY[TEXT]"])[2][b"BODY[TEXT]"] == b"Body of message 2.\r\n"
            assert b"\\Seen" in c.get_flags([2])[2]
            c.add_flags([1, 2], [b"\\Flagged", b"Todo"])
            assert set(c.get_flags([1])[1]) >= {b"\\Flagged", b"Todo"}
            c.remove_flags([1], [b"Todo"])
            assert b"Todo" not in c.get_flags([1])[1]
            assert c.search(["FLAGGED"]) == [1, 2]
            assert c.search(["HEADER", "Message-ID", "<msg-4@corp.example>"]) == [4]
            assert c.search(["SUBJECT", "message 5"]) == [5]
            c.copy([1], "Drafts")
            c.move([5], "Trash")
            assert c.search("ALL") == [1, 2, 3, 4]
            c.set_flags([4], [b"\\Deleted"])
            c.expunge([4])
            assert c.search("ALL") == [1, 2, 3]
            resp = c.append("INBOX", make_message(9), flags=[b"\\Seen"])
            assert b"APPENDUID" in resp
            status = c.folder_status("Trash", [b"MESSAGES", b"UIDNEXT", b"HIGHESTMODSEQ"])
            assert status[b"MESSAGES"] == 1 and status[b"HIGHESTMODSEQ"] >= 1
            assert c.namespace().personal == (("", "/"),)
            assert b"recall-lab" in c.id_()[0]
            c.unselect_folder()
            c.create_folder("Archive/2026")
            c.rename_folder("Archive/2026", "Archive/2025")
            assert c.folder_exists("Archive/2025")
            c.delete_folder("Archive/2025")
            c.subscribe_folder("Archive")
            assert "Archive" in [f[2] for f in c.list_sub_folders()]
            c.noop()
    await asyncio.to_thread(body)
    assert len(imap.store.messages(ALICE, "Drafts")) == 1


async def test_idle_sees_delivery_flag_change_and_expunge_at_once(imap):
    for n in range(1, 4):
        imap.deliver(n)
    idler = await asyncio.to_thread(_connect, imap)
    other = await asyncio.to_thread(_connect, imap)
    try:
        await asyncio.to_thread(idler.select_folder, "INBOX")
        await asyncio.to_thread(other.select_folder, "INBOX")
        await asyncio.to_thread(idler.idle)

        imap.deliver(4)  # SMTP-style delivery through the store
        started = time.monotonic()
        got = await asyncio.to_thread(idler.idle_check, 5)
        assert (4, b"EXISTS") in got
        assert time.monotonic() - started < 2

        await asyncio.to_thread(other.add_flags, [2], [b"\\Seen"])  # another session
        got = await asyncio.to_thread(idler.idle_check, 5)
        assert any(r[0] == 2 and r[1] == b"FETCH" for r in got), got

        imap.store.expunge(ALICE, "INBOX", [1])  # a recall
        got = await asyncio.to_thread(idler.idle_check, 5)
        assert (1, b"EXPUNGE") in got

        text, _ = await asyncio.to_thread(idler.idle_done)
        assert b"IDLE terminated" in text
    finally:
        await asyncio.to_thread(idler.logout)
        await asyncio.to_thread(other.logout)


async def test_condstore_and_qresync(imap):
    for n in range(1, 6):
        imap.deliver(n)

    def body():
        with _connect(imap) as c:
            assert c.enable("QRESYNC") == [b"QRESYNC"]
            info = c.select_folder("INBOX")
            uidvalidity, modseq = info[b"UIDVALIDITY"], info[b"HIGHESTMODSEQ"]
            c.add_flags([2], [b"\\Answered"])
            data = c.fetch([1, 2, 3], ["FLAGS"], modifiers=[f"CHANGEDSINCE {modseq}"])
            assert list(data) == [2] and data[2][b"MODSEQ"][0] > modseq
            c.unselect_folder()
            return uidvalidity, modseq
    uidvalidity, modseq = await asyncio.to_thread(body)
    imap.store.expunge(ALICE, "INBOX", [3, 4])

    def resync():
        with _connect(imap) as c:
            c.enable("QRESYNC")
            typ, data = c._imap._simple_command(
                "SELECT", f"INBOX (QRESYNC ({uidvalidity} {modseq} 1:5))")
            assert typ == "OK"
            vanished = c._imap.untagged_responses.get("VANISHED")
            assert vanished == [b"(EARLIER) 3:4"]
            fetches = c._imap.untagged_responses.get("FETCH")
            assert any(b"UID 2 " in f and b"\\Answered" in f for f in fetches)
    await asyncio.to_thread(resync)
