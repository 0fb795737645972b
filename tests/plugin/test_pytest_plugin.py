"""The pytest plugin, exercised the way a user's project uses it: pytester runs small test files."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest_plugins = ["pytester"]

#: A test file as a user would write it in their own project (the example in docs/plugin.md, plus an async one).
USER_TESTS = textwrap.dedent(
    '''
    import smtplib
    from email.message import EmailMessage

    import pytest


    def send_invoice(host, port, user, password, to):
        """The user's own code under test: it sends a mail with smtplib."""
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = user, to, "Invoice 42"
        msg["Message-ID"] = "<invoice-42@corp.example>"
        msg.set_content("Please pay.")
        with smtplib.SMTP(host, port, local_hostname="localhost") as smtp:
            smtp.login(user, password)
            smtp.send_message(msg)


    def test_invoice_reaches_bob(mail_lab):
        sub = mail_lab.submission("corp.example")
        send_invoice(sub.host, sub.port, "alice@corp.example", mail_lab.password("alice@corp.example"),
                     "bob@corp.example")
        where = mail_lab.wait_for_message("bob@corp.example", "<invoice-42@corp.example>")
        assert where.mailbox == "INBOX"
        assert b"Please pay." in mail_lab.fetch("bob@corp.example", "<invoice-42@corp.example>")


    def test_each_test_gets_a_fresh_lab(mail_lab):
        assert mail_lab.message_ids("bob@corp.example") == []


    def test_watch_a_mailbox(mail_lab):
        with mail_lab.watch("carol@corp.example") as inbox:
            mail_lab.send("alice@corp.example", "carol@corp.example", "Hi")
            events = inbox.wait(timeout=5)
        assert type(events[0]).__name__ == "MessageAppended"


    @pytest.mark.asyncio
    async def test_desktop_client_sees_the_message(mail_lab, desktop_client):
        bob = await desktop_client("bob@corp.example")
        mid = await mail_lab.asend("alice@corp.example", "bob@corp.example", "Lunch?")
        await bob.wait_for_message(mid, timeout=5)
        assert bob.preview(mid).subject == "Lunch?"


    @pytest.mark.asyncio
    async def test_web_client_and_recall(mail_lab, web_client, recall_agent):
        mid = await mail_lab.asend("alice@corp.example", "bob@corp.example", "Oops")
        await mail_lab.await_message("bob@corp.example", mid)
        page = web_client("bob@corp.example")
        await page.page_load()
        await page.open(mid)
        handle = await recall_agent("alice@corp.example").recall(mid)
        await mail_lab.await_gone("bob@corp.example", mid)
        assert page.snapshot_visible(mid)  # the static page still shows it
        report = await handle.report(timeout=5)
        assert report.original_message_id == mid


    def test_the_http_api_reads_the_same_lab(mail_lab, tmp_path_factory):
        import json, os, urllib.request
        mid = mail_lab.send("alice@corp.example", "bob@corp.example", "Reset your password", "Code: 1234")
        url = f"{mail_lab.web.url}/api/v1/wait?user=bob@corp.example&q=subject:reset&timeout=5"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {mail_lab.web.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["message_id"] == mid
    '''
)


def test_plugin_import_is_cheap_and_independent():
    """Importing the plugin must not import the lab, the servers or the clients (it runs in every pytest)."""
    code = ("import sys, recall_lab.harness.pytest_plugin; "
            "heavy = [m for m in sys.modules if m.startswith(('recall_lab.harness.lab', 'recall_lab.harness.clients', 'recall_lab.fake_servers'))]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_user_style_tests_pass(pytester: pytest.Pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=6)


def test_under_xdist_each_worker_has_its_own_lab(pytester: pytest.Pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_user=USER_TESTS)
    ports = pytester.path / "ports"
    ports.mkdir()
    pytester.makeconftest(textwrap.dedent('''
        import os
        import pytest

        @pytest.fixture(autouse=True)
        def note_the_web_port(mail_lab):
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            with open(os.path.join(os.environ["WEB_PORTS_DIR"], worker), "w") as out:
                out.write(str(mail_lab.web.port))
    '''))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WEB_PORTS_DIR", str(ports))
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "-n", "2")
    result.assert_outcomes(passed=6)
    seen = {f.name: int(f.read_text()) for f in ports.iterdir()}
    assert set(seen) == {"gw0", "gw1"} and len(set(seen.values())) == 2  # each worker's lab, its own web port


def test_marker_and_ini_choose_the_config_and_scope(pytester: pytest.Pytester):
    pytester.makefile(".toml", lab=textwrap.dedent(
        """
        [domains."acme.example"]
        role = "organisation"
        users = ["zoe"]
        """))
    pytester.makeini(textwrap.dedent(
        """
        [pytest]
        recall_lab_scope = session
        """))
    pytester.makepyfile(test_cfg=textwrap.dedent(
        """
        import pytest

        seen = []

        def test_default_lab(mail_lab):
            seen.append(id(mail_lab))
            assert "corp.example" in mail_lab.domains

        def test_same_lab_with_session_scope(mail_lab):
            seen.append(id(mail_lab))
            assert seen[0] == seen[1]

        def test_session_fixture(mail_lab_session):
            assert mail_lab_session.password("bob@corp.example") == "bob-password"
        """))
    pytester.makepyfile(test_marker=textwrap.dedent(
        """
        import pytest

        @pytest.fixture(scope="function")
        def mail_lab(request):  # a project may override the scope back for one module
            from recall_lab.harness.pytest_plugin import _running_lab
            with _running_lab(request.config, request.node.get_closest_marker("mail_lab")) as lab:
                yield lab

        @pytest.mark.mail_lab(config="lab.toml")
        def test_marker_config(mail_lab):
            assert mail_lab.domains == ["acme.example"]
            mid = mail_lab.send("zoe@acme.example", "zoe@acme.example", "note to self")
            mail_lab.wait_for_message("zoe@acme.example", mid)
        """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=4)


def test_a_failing_wait_fails_the_test_with_a_clear_message(pytester: pytest.Pytester):
    pytester.makepyfile(test_fail=textwrap.dedent(
        """
        def test_never_arrives(mail_lab):
            mail_lab.wait_for_message("bob@corp.example", "<nope@x>", timeout=0.2)
        """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*TimeoutError: <nope@x> did not reach bob@corp.example within 0.2 s*"])
