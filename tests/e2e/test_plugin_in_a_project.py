"""The pytest plugin as another project uses it: a fresh folder, the README's kind of test, plain `pytest`.

Why a subprocess: the plugin is loaded through its `pytest11` entry point, which only a separate pytest run
exercises the way a user's project does (no conftest, no rootdir of ours).
"""

from __future__ import annotations

import os
import subprocess
import sys

from .test_journey_clients import LEGACY_LAB

USER_TESTS = '''
import smtplib
from email.message import EmailMessage

import pytest


def send_invoice(host, port, user, password, to, number):
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = user, to, f"Invoice {number}"
    msg["Message-ID"] = f"<invoice-{number}@corp.example>"
    msg.set_content("Please pay.")
    with smtplib.SMTP(host, port, local_hostname="localhost") as smtp:
        smtp.login(user, password)
        smtp.send_message(msg)


def test_invoice_reaches_bob(mail_lab):
    sub = mail_lab.submission("corp.example")
    send_invoice(sub.host, sub.port, "alice@corp.example", mail_lab.password("alice@corp.example"),
                 to="bob@corp.example", number=42)
    where = mail_lab.wait_for_message("bob@corp.example", "<invoice-42@corp.example>")
    assert where.mailbox == "INBOX"
    assert b"Please pay." in mail_lab.fetch("bob@corp.example", "<invoice-42@corp.example>")


@pytest.mark.asyncio
async def test_a_recalled_invoice_stays_on_the_web_page(mail_lab, web_client, recall_agent):
    mid = await mail_lab.asend("alice@corp.example", "bob@corp.example", "Invoice 43")
    await mail_lab.await_message("bob@corp.example", mid)
    page = web_client("bob@corp.example")
    await page.page_load()
    await page.open(mid)
    await recall_agent("alice@corp.example").recall(mid)
    await mail_lab.await_gone("bob@corp.example", mid)
    assert page.snapshot_visible(mid)


@pytest.mark.mail_lab(config="tests/legacy.toml")
@pytest.mark.asyncio
async def test_a_legacy_desktop_client_deletes_an_unread_original(mail_lab, desktop_client, recall_agent):
    bob = await desktop_client("bob@corp.example", process_recalls_on_arrival=True)
    mid = await mail_lab.asend("alice@corp.example", "bob@corp.example", "Oops")
    await bob.wait_for_message(mid, timeout=5)
    handle = await recall_agent("alice@corp.example").recall(mid)
    report = await handle.report(timeout=10, until_complete=True)
    assert report.statuses["bob@corp.example"].value == "recalled"
    await bob.wait_for_gone(mid, timeout=5)
    await mail_lab.await_gone("bob@corp.example", mid)


def test_a_message_that_never_comes(mail_lab):
    mail_lab.wait_for_message("bob@corp.example", "<never-sent@corp.example>", timeout=0.5)
'''


def test_a_users_project_gets_a_lab_from_the_plugin(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_invoices.py").write_text(USER_TESTS)
    (tmp_path / "tests" / "legacy.toml").write_text(LEGACY_LAB)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", "tests"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "1 failed, 3 passed" in out, out
    assert "FAILED tests/test_invoices.py::test_a_message_that_never_comes" in out, out
    assert "TimeoutError: <never-sent@corp.example> did not reach bob@corp.example" in out, \
        "a wait that runs out says what did not happen"
