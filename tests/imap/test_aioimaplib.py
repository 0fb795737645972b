"""aioimaplib (an asyncio client) against the server: the common commands and IDLE pushes."""

from __future__ import annotations

import asyncio
import time

import aioimaplib

from .conftest import ALICE, ALICE_PW, make_message


async def _client(lab) -> aioimaplib.IMAP4:
    c = aioimaplib.IMAP4(host=lab.host, port=lab.port, timeout=10)
    await c.wait_hello_from_server()
    resp = await c.login(ALICE, ALICE_PW)
    assert resp.result == "OK", resp
    return c


async def test_commands(imap):
    for n in range(1, 4):
        imap.deliver(n)
    c = await _client(imap)
    try:
        resp = await c.enable("CONDSTORE")
        assert resp.result == "OK" and resp.lines[0] == b"ENABLED CONDSTORE"
        resp = await c.select("INBOX")
        assert resp.result == "OK" and b"3 EXISTS" in resp.lines
        resp = await c.search("ALL")
        assert resp.lines[0] == b"1 2 3"
        resp = await c.uid_search("HEADER Message-ID <msg-2@corp.example>")
        assert resp.lines[0] == b"2"
        resp = await c.fetch("1", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert resp.result == "OK" and resp.lines[1] == bytearray(b"Subject: message 1\r\n\r\n")
        resp = await c.uid("fetch", "2", "(BODY[])")
        assert resp.result == "OK" and bytes(resp.lines[1]) == make_message(2)
        resp = await c.store("1", "+FLAGS", "(\\Answered)")
        assert resp.result == "OK" and b"\\Answered" in resp.lines[0]
        resp = await c.append(make_message(7), mailbox="Drafts", flags="(\\Draft)")
        assert resp.result == "OK" and b"APPENDUID" in resp.lines[-1]
        resp = await c.copy("1", "Trash")
        assert resp.result == "OK"
        resp = await c.move("3", "Trash")
        assert resp.result == "OK" and b"3 EXPUNGE" in resp.lines
        resp = await c.status("Trash", "(MESSAGES)")
        assert resp.lines[0] == b"Trash (MESSAGES 2)"
        resp = await c.list('""', "*")
        assert b'(\\HasNoChildren \\Drafts) "/" Drafts' in resp.lines
        resp = await c.expunge()
        assert resp.result == "OK"
        resp = await c.close()
        assert resp.result == "OK"
    finally:
        await c.logout()


async def test_idle_push_latency(imap):
    imap.deliver(1)
    idler = await _client(imap)
    other = await _client(imap)
    try:
        await idler.select("INBOX")
        await other.select("INBOX")
        idle = await idler.idle_start(timeout=30)
        while idler.has_pending_idle() and not idler.protocol._idle_event.is_set():
            await asyncio.wait_for(idler.protocol._idle_event.wait(), 5)
        latencies = []
        for n in range(2, 7):
            started = time.perf_counter()
            imap.deliver(n)
            push = await idler.wait_server_push(timeout=5)
            latencies.append(time.perf_counter() - started)
            assert f"{n} EXISTS".encode() in push
        await other.noop()  # learns of the new messages (EXISTS) before naming them
        await other.store("2", "+FLAGS", "(\\Flagged)")
        push = await idler.wait_server_push(timeout=5)
        assert any(b"2 FETCH" in line and b"\\Flagged" in line for line in push), push
        await other.uid("expunge", "1")  # not \Deleted: nothing happens
        await other.store("1", "+FLAGS.SILENT", "(\\Deleted)")
        push = await idler.wait_server_push(timeout=5)
        await other.expunge()
        while not any(b"EXPUNGE" in line for line in push):
            push = await idler.wait_server_push(timeout=5)
        idler.idle_done()
        assert (await asyncio.wait_for(idle, 5)).result == "OK"
        latencies.sort()
        assert latencies[len(latencies) // 2] < 0.05  # loopback push; the benchmark measures precisely
    finally:
        await idler.logout()
        await other.logout()
