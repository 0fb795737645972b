"""The timeline's recall bookkeeping, as the console reads it: each recall named by its original's subject,
recall messages linked to their original, and hostile recall headers that name no Message-ID kept harmless.

Over a real lab: mail sent over SMTP submission, the recall made by the recall agent (cloud mode), and a
hostile message delivered through the store's public API.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from recall_lab.harness.lab import Lab
from recall_lab.harness.recall_agent import RecallAgent

ALICE, BOB = "alice@corp.example", "bob@corp.example"
TIMEOUT = 10.0


async def send(lab: Lab, subject: str) -> str:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ALICE, BOB, subject
    msg["Message-ID"] = mid = make_msgid(domain="corp.example")
    msg.set_content("text\n")
    ep = lab.submission("corp.example")
    await aiosmtplib.send(msg, hostname=ep.host, port=ep.port, username=ALICE, password=lab.password(ALICE),
                          start_tls=False, timeout=TIMEOUT, local_hostname="localhost")
    await lab.wait_idle()
    return mid


async def test_a_cloud_recall_is_named_by_its_original_and_its_messages_point_to_it() -> None:
    async with Lab(web=True) as lab:
        timeline = lab.web.timeline
        mid = await send(lab, "Board minutes, draft")
        handle = await RecallAgent(lab, ALICE, lab.password(ALICE), timeout=TIMEOUT).recall(mid)
        await handle.report(timeout=TIMEOUT)
        await lab.wait_idle()
        rec = timeline.recall(mid)
        assert rec is not None and rec.subject == "Board minutes, draft"
        assert rec is timeline.recall(mid.strip("<>"))  # with or without the angle brackets
        honoured = [e for e in timeline.since(0) if e["kind"] == "recall-honoured"]
        assert len(honoured) == 1 and honoured[0]["subject"] == "Board minutes, draft"
        report = [e for e in timeline.since(0) if e["kind"] == "stored" and e.get("message_kind") == "report"]
        assert len(report) == 1 and report[0]["original"] == mid and report[0]["user"] == ALICE
        assert rec.reports and rec.reports[0]["seq"] == report[0]["seq"]
        plain = [e for e in timeline.since(0) if e["kind"] == "stored" and not e.get("message_kind")]
        assert plain and all("original" not in e for e in plain)


async def test_a_recall_header_that_names_no_message_id_is_listed_but_makes_no_record(caplog) -> None:
    async with Lab(web=True) as lab:
        timeline = lab.web.timeline
        hostile = (b"From: x@evil.example\r\nTo: bob@corp.example\r\nSubject: Recall Success: nothing\r\n"
                   b"Message-ID: <h1@evil.example>\r\nX-Recall-Notice: yes\r\n"
                   b"X-Recall-Message-ID: not an id <at all>\r\n\r\nbody\r\n")
        lab.store("corp.example").deliver(BOB, hostile)
        stored = [e for e in timeline.since(0) if e["kind"] == "stored" and e["user"] == BOB]
        assert len(stored) == 1 and stored[0]["message_kind"] == "notice"
        assert len(timeline.recalls) == 0
        assert timeline.recall("not an id") is None and timeline.recall("") is None
        assert not [r for r in caplog.records if r.levelname == "ERROR"]  # no listener failed on it
