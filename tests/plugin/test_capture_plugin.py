"""Capture mode and the mail helpers through the pytest plugin, as a user's project uses them: the README's
password-reset example run as it stands, the marker, the ini option, and the helpers of the fixture."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE = re.compile(r"<!-- example: password-reset[^>]*-->\n```python\n(.*?)```\n<!-- example: end -->", re.DOTALL)


def readme_example() -> str:
    found = EXAMPLE.findall(README.read_text(encoding="utf-8"))
    assert len(found) == 1, "README.md must hold exactly one password-reset example between its markers"
    return found[0]


def test_the_readme_password_reset_example_passes_as_it_stands(pytester: pytest.Pytester):
    pytester.makepyfile(test_readme_example=readme_example())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)


def test_the_readme_example_fails_when_the_mail_is_wrong(pytester: pytest.Pytester):
    """The example can fail: with the application sending another token, its assertion says so."""
    broken = readme_example().replace('"T0K3N")\n', '"WR0NG")\n', 1)
    assert broken != readme_example()
    pytester.makepyfile(test_readme_example=broken)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError*"])


USER_TESTS = textwrap.dedent(
    '''
    import re
    import smtplib
    from datetime import UTC, datetime

    import pytest


    def app_sends(endpoint, to, subject, body="hi"):
        with smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="localhost") as smtp:
            smtp.sendmail("noreply@myapp.example", to,
                          f"From: noreply@myapp.example\\r\\nSubject: {subject}\\r\\n\\r\\n{body}\\r\\n")


    def test_no_capture_by_default(mail_lab):
        with pytest.raises(RuntimeError, match="capture mode is off"):
            mail_lab.capture
        assert "capture" not in mail_lab.endpoints()


    @pytest.mark.mail_lab(config="lab.toml", capture=True)
    def test_marker_adds_capture_to_a_config(mail_lab):
        assert mail_lab.domains == ["shop.example"]
        assert set(mail_lab.endpoints()["capture"]) == {"smtp", "imap"}


    @pytest.mark.mail_lab(capture=True)
    def test_fixture_helpers(mail_lab):
        start = datetime.now(UTC)
        app_sends(mail_lab.capture.smtp, ["a@example.com", "b@example.com"], "Welcome", "code 123")
        app_sends(mail_lab.capture.smtp, ["a@example.com"], "Receipt", "total 9.99")
        assert [m["Subject"] for m in mail_lab.messages("a@example.com")] == ["Welcome", "Receipt"]
        assert mail_lab.latest("a@example.com")["Subject"] == "Receipt"
        assert [m.user for m in mail_lab.find(subject="welcome", since=start)] == ["a@example.com", "b@example.com"]
        assert mail_lab.find(text=re.compile(r"total \\d+\\.\\d\\d"))[0]["Subject"] == "Receipt"
        # the realistic domains and the capture side by side
        mid = mail_lab.send("alice@corp.example", "bob@corp.example", "Invoice 42", "Please pay.")
        assert mail_lab.wait_for(to="bob@corp.example").message_id == mid
        assert mail_lab.message("bob@corp.example", mid).get_content().strip() == "Please pay."
        assert mail_lab.clear("a@example.com") == 2
        assert mail_lab.clear() >= 3  # b's capture copy, bob's copy, alice's Sent copy
        assert mail_lab.find() == []
        with pytest.raises(TimeoutError, match="no message with subject='never' in INBOX arrived within 0.2 s"):
            mail_lab.wait_for(subject="never", timeout=0.2)


    @pytest.mark.mail_lab(capture=True)
    async def test_async_spelling(mail_lab):
        import asyncio
        waiting = asyncio.ensure_future(mail_lab.await_for(to="z@example.com", timeout=10))
        await asyncio.to_thread(app_sends, mail_lab.capture.smtp, ["z@example.com"], "Async")
        assert (await waiting)["Subject"] == "Async"
    ''')

LAB_TOML = textwrap.dedent('''
    [domains."shop.example"]
    role = "organisation"
    users = ["clerk"]
    ''')


def test_marker_and_fixture_helpers(pytester: pytest.Pytester):
    pytester.makefile(".toml", lab=LAB_TOML)
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=4)


def test_the_ini_option_turns_capture_on_for_every_lab(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\nrecall_lab_capture = true\nrecall_lab_scope = session\n")
    pytester.makepyfile(test_ini=textwrap.dedent('''
        def test_function_lab(mail_lab):
            assert "capture" in mail_lab.endpoints()

        def test_session_lab(mail_lab_session):
            assert "capture" in mail_lab_session.endpoints()
        '''))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=2)
