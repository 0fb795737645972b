"""Capture mode over real sockets: any sender and recipient, AUTH optional, IMAP with any password, mailboxes made
on first delivery, the domains' hostile-input rules, the bounds, and nothing relayed out."""

from __future__ import annotations

import contextlib
import imaplib
import smtplib
from collections.abc import Iterator

import pytest

from recall_lab.fake_servers.capture import CaptureSettings
from recall_lab.fake_servers.guard import GuardLimits
from recall_lab.harness.config import default_config
from recall_lab.harness.lab import BlockingLab

APP = "noreply@myapp.example"


@contextlib.contextmanager
def capture_lab(store: str = "memory", **settings: object) -> Iterator[BlockingLab]:
    config = default_config()
    config.capture = CaptureSettings(**settings)  # type: ignore[arg-type]
    # a wrong password is answered at once: these tests check the answer, not the throttle (docs/security.md)
    config.limits = GuardLimits(auth_failure_delay=0.0, auth_failure_delay_max=0.0)
    with BlockingLab(config, web=False, store=store) as lab:
        yield lab


def smtp(lab: BlockingLab) -> smtplib.SMTP:
    ep = lab.capture.smtp
    return smtplib.SMTP(ep.host, ep.port, local_hostname="localhost", timeout=10)


def imap(lab: BlockingLab) -> imaplib.IMAP4:
    ep = lab.capture.imap
    return imaplib.IMAP4(ep.host, ep.port, timeout=10)


def mail(subject: str, to: str = "someone@example.com", body: str = "hello", sender: str = APP) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@myapp.example>\r\n\r\n"
            f"{body}\r\n").encode()


def test_any_sender_to_any_recipient_without_auth_and_nothing_leaves():
    with capture_lab() as lab:
        with smtp(lab) as s:
            refused = s.sendmail(APP, ["someone@example.com", "Other@Elsewhere.example", "bob@corp.example",
                                       "dave@mail.example"], mail("reset"))
        assert refused == {}
        got = lab.messages("someone@example.com")
        assert [m["Subject"] for m in got] == ["reset"]
        raw = got[0].raw
        assert raw.startswith(b"Return-Path: <noreply@myapp.example>\r\nDelivered-To: someone@example.com\r\n")
        assert b"by capture.localhost (recall-lab) with ESMTP " in raw
        assert raw.endswith(mail("reset"))  # the application's own fields untouched
        assert [m.source for m in lab.messages("other@elsewhere.example")] == ["capture"]  # any case
        assert set(lab.capture.users()) == {"someone@example.com", "other@elsewhere.example", "bob@corp.example",
                                            "dave@mail.example"}
        # the realistic domains got nothing: no delivery into their stores, nothing queued for relay
        lab.wait_idle()
        assert lab.call(lambda: lab.store("corp.example").messages("bob@corp.example", "INBOX")) == []
        assert lab.call(lambda: lab.store("mail.example").messages("dave@mail.example", "INBOX")) == []
        assert lab.relay_pending("corp.example") == [] and lab.relay_pending("mail.example") == []


def test_auth_is_optional_and_any_credentials_are_accepted():
    with capture_lab() as lab, smtp(lab) as s:
        s.ehlo()
        assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
        code, _ = s.login("my-app", "not-a-real-password")
        assert code == 235
        s.sendmail(APP, ["a@example.com"], mail("with-auth", to="a@example.com"))
        got = lab.latest("a@example.com")
        assert b" with ESMTPA " in got.raw  # the Received field says it was authenticated
    with capture_lab() as lab, smtp(lab) as s:
        s.ehlo()
        s.user, s.password = "someone-else", "x"
        code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        assert code == 235


def test_imap_login_with_any_password_and_mailboxes_made_on_demand():
    with capture_lab() as lab:
        with smtp(lab) as s:
            s.sendmail(APP, ["someone@example.com"], mail("reset", body="token=42"))
        client = imap(lab)
        try:
            assert client.login("Someone@Example.com", "anything at all")[0] == "OK"
            assert client.select("INBOX")[1] == [b"1"]
            _, data = client.fetch("1", "(BODY[TEXT])")
            assert b"token=42" in data[0][1]
        finally:
            client.logout()
        client = imap(lab)  # an address never mailed: its mailbox is made at login, empty
        try:
            client.login("nobody-yet@example.net", "x")
            assert client.select("INBOX")[1] == [b"0"]
        finally:
            client.logout()
        assert "nobody-yet@example.net" in lab.capture.users()
        client = imap(lab)
        try:
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                client.login("not-an-address", "x")  # a capture mailbox is named by an address
        finally:
            client.shutdown()


def test_a_configured_password_is_the_only_imap_password_but_smtp_takes_any():
    with capture_lab(password="s3cret") as lab:
        with smtp(lab) as s:
            s.login("app", "something else")
            s.sendmail(APP, ["u@example.com"], mail("x", to="u@example.com"))
        client = imap(lab)
        try:
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                client.login("u@example.com", "wrong")
            assert client.login("u@example.com", "s3cret")[0] == "OK"
            assert client.select("INBOX")[1] == [b"1"]
        finally:
            client.logout()


def test_the_domains_rules_for_hostile_input_apply():
    with capture_lab(max_message_size=2048, max_bytes=8192) as lab, smtp(lab) as s:
        with pytest.raises(smtplib.SMTPDataError) as bare_lf:
            s.sendmail(APP, ["a@example.com"], b"Subject: x\r\nX-Bad: one\ntwo\r\n\r\nbody\r\n")
        assert bare_lf.value.smtp_code == 550 and b"5.6.0" in bare_lf.value.smtp_error
        s.rset()
        assert s.mail(APP)[0] == 250
        code, reply = s.rcpt("no-at-sign")
        assert code == 553 and reply.startswith(b"5.1.3")
        s.rset()
        with pytest.raises(smtplib.SMTPException) as too_big:
            s.sendmail(APP, ["a@example.com"], mail("big", to="a@example.com", body="x" * 70 * 60))
        assert "552" in str(too_big.value)
    with capture_lab() as lab:
        assert lab.find() == []


def test_the_oldest_messages_are_dropped_past_max_messages():
    with capture_lab(max_messages=3) as lab:
        with smtp(lab) as s:
            for n in range(5):
                s.sendmail(APP, ["a@example.com"], mail(f"n{n}", to="a@example.com"))
        assert [m["Subject"] for m in lab.messages("a@example.com")] == ["n2", "n3", "n4"]
        assert lab.capture.message_count == 3


def test_the_oldest_messages_are_dropped_past_max_bytes():
    with capture_lab(max_bytes=3000, max_message_size=1500) as lab:
        with smtp(lab) as s:
            for n in range(3):
                s.sendmail(APP, ["a@example.com"], mail(f"n{n}", to="a@example.com", body="y" * 900))
        assert [m["Subject"] for m in lab.find(to="a@example.com")] == ["n1", "n2"]
        assert 0 < lab.capture.byte_count <= 3000


def test_imap_append_counts_towards_the_bound():
    with capture_lab(max_messages=2) as lab:
        with smtp(lab) as s:
            for n in range(2):
                s.sendmail(APP, ["a@example.com"], mail(f"n{n}", to="a@example.com"))
        client = imap(lab)
        try:
            client.login("a@example.com", "x")
            assert client.append("INBOX", None, None, mail("appended", to="a@example.com"))[0] == "OK"
            client.select("INBOX")
            _, data = client.search(None, "ALL")
            assert len(data[0].split()) == 2
        finally:
            client.logout()
        assert [m["Subject"] for m in lab.messages("a@example.com")] == ["n1", "appended"]


def test_new_addresses_are_refused_past_max_addresses():
    with capture_lab(max_addresses=2) as lab:
        with smtp(lab) as s:
            refused = s.sendmail(APP, ["a@example.com", "b@example.com", "c@example.com"], mail("x"))
        assert list(refused) == ["c@example.com"] and refused["c@example.com"][0] == 452
        with smtp(lab) as s:  # a known address still gets mail
            assert s.sendmail(APP, ["a@example.com"], mail("y", to="a@example.com")) == {}
        client = imap(lab)
        try:
            with pytest.raises(imaplib.IMAP4.error):
                client.login("d@example.com", "x")
        finally:
            client.shutdown()
        assert sorted(lab.capture.users()) == ["a@example.com", "b@example.com"]


def test_endpoints_json_gains_capture_and_keeps_every_other_key():
    with capture_lab() as lab:
        endpoints = lab.endpoints()
        assert endpoints["capture"] == {"smtp": {"host": "127.0.0.1", "port": lab.capture.smtp.port},
                                        "imap": {"host": "127.0.0.1", "port": lab.capture.imap.port}}
        assert set(endpoints["domains"]) == {"corp.example", "mail.example"}
    with BlockingLab(default_config(), web=False) as lab:
        assert "capture" not in lab.endpoints()
        with pytest.raises(RuntimeError, match="capture mode is off"):
            _ = lab.capture


def test_the_realistic_domains_stay_strict_in_a_capture_lab():
    with capture_lab() as lab:
        sub = lab.submission("corp.example")
        with smtplib.SMTP(sub.host, sub.port, local_hostname="localhost", timeout=10) as s:
            s.login("alice@corp.example", "alice-password")
            code, _ = s.mail(APP)
            assert code == 553  # still not alice's address
        mx = lab.mx("corp.example")
        with smtplib.SMTP(mx.host, mx.port, local_hostname="localhost", timeout=10) as s:
            s.ehlo()
            s.mail(APP)
            assert s.rcpt("someone@example.com")[0] == 550  # still no relay
            assert s.rcpt("nobody@corp.example")[0] == 550  # still no unknown user


def test_a_maildir_capture_keeps_its_mail_and_its_count_across_a_restart(tmp_path):
    store = f"maildir:{tmp_path / 'mail'}"
    with capture_lab(store=store, max_messages=2) as lab:
        with smtp(lab) as s:
            for n in range(2):
                s.sendmail(APP, ["a@example.com"], mail(f"n{n}", to="a@example.com"))
    with capture_lab(store=store, max_messages=2) as lab:
        assert [m["Subject"] for m in lab.messages("a@example.com")] == ["n0", "n1"]
        with smtp(lab) as s:
            s.sendmail(APP, ["a@example.com"], mail("n2", to="a@example.com"))
        assert [m["Subject"] for m in lab.messages("a@example.com")] == ["n1", "n2"]
