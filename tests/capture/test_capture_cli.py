"""`recall-lab serve --capture` (and a config's [capture]) in a subprocess: the endpoints JSON names the capture,
its SMTP listener takes anyone's mail and its IMAP listener serves it; a --port-base without room is refused."""

from __future__ import annotations

import imaplib
import smtplib
import textwrap

import pytest

from tests.e2e.conftest import assert_one_line_error, run_cli, start_serve


def _check_capture(endpoints: dict) -> None:
    smtp, imap = endpoints["capture"]["smtp"], endpoints["capture"]["imap"]
    with smtplib.SMTP(smtp["host"], smtp["port"], local_hostname="localhost", timeout=10) as s:
        assert s.sendmail("noreply@myapp.example", ["someone@example.com"],
                          b"Subject: Reset\r\nMessage-ID: <r1@myapp.example>\r\n\r\ntoken=9\r\n") == {}
    client = imaplib.IMAP4(imap["host"], imap["port"], timeout=10)
    try:
        client.login("someone@example.com", "any password")
        assert client.select("INBOX")[1] == [b"1"]
        _, data = client.fetch("1", "(BODY[TEXT])")
        assert b"token=9" in data[0][1]
    finally:
        client.logout()


@pytest.mark.parametrize("how", ["flag", "config"])
def test_serve_with_capture(tmp_path, how):
    if how == "flag":
        args: tuple[str, ...] = ("--capture", "--no-web")
    else:
        config = tmp_path / "lab.toml"
        config.write_text(textwrap.dedent("""\
            [capture]
            max_messages = 10
            [domains."corp.example"]
            role = "organisation"
            users = ["alice"]
            """))
        args = ("--config", str(config), "--no-web")
    served = start_serve(tmp_path, *args)
    try:
        assert set(served.endpoints) >= {"domains", "capture"}
        assert set(served.endpoints["capture"]) == {"smtp", "imap"}
        _check_capture(served.endpoints)
    finally:
        code, err = served.stop()
    assert code == 0 and "Traceback" not in err, err


def test_serve_without_capture_has_no_capture_key(tmp_path):
    served = start_serve(tmp_path, "--no-web")
    try:
        assert "capture" not in served.endpoints
    finally:
        served.stop()


def test_port_base_must_leave_room_for_the_capture():
    # two domains fit below 65536 from 65510 (65510..65529), the capture's block (65530..) does not
    assert_one_line_error(run_cli("serve", "--json", "--capture", "--port-base", "65510"),
                          "leaves no room for 2 domains and the capture")
