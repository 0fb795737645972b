"""`recall-lab serve` as a long-running program: signals, fixed ports, a port already taken, a Maildir lab that
is stopped and started again, and Dovecot serving the same Maildir.
"""

from __future__ import annotations

import random
import re
import signal
import socket
import subprocess
from contextlib import ExitStack

import pytest

from .conftest import cli_command, cli_env, first_line, message_ids, run_cli, start_serve
from .test_journey_cloud import recall, send


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_serve_cleanly(tmp_path, sig):
    """Even with a client idling: it is told BYE, the server exits 0, nothing on stderr."""
    served = start_serve(tmp_path)
    port = served.imap_port("corp.example")
    bob = served.imap("bob@corp.example")
    bob.select_folder("INBOX")
    bob.idle()
    code, err = served.stop(sig)
    assert code == 0
    assert err == "", err
    said = bob.idle_check(timeout=5)
    assert said and said[0][0] == b"BYE", said
    with socket.socket() as s:  # every listener is closed: nothing answers any more
        assert s.connect_ex(("127.0.0.1", port)) != 0


def _free_port_base(count: int = 2) -> tuple[int, ExitStack]:
    """A base N whose N+10i..N+10i+2 ports are all free; held by bound (unlistened) sockets until released.

    Why below 32768: Linux hands out ephemeral ports from 32768 up, so no other test's port-0 socket can
    take one of ours between the check and the lab's start. Why hold them: nor can another `--port-base`
    test (xdist) pick the same base while we look.
    """
    rng = random.Random()
    for _attempt in range(200):
        base = rng.randrange(20000, 32000 - 10 * count)
        stack = ExitStack()
        try:
            for i in range(count):
                for off in range(3):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", base + 10 * i + off))
        except OSError:
            stack.close()
            continue
        return base, stack
    raise AssertionError("no free port base found")


def test_port_base_gives_documented_ports_and_a_second_lab_is_refused(tmp_path):
    base, held = _free_port_base()
    held.close()
    served = start_serve(tmp_path, "--port-base", str(base))
    try:
        ports = {d: (i["imap"]["port"], i["submission"]["port"], i["mx"]["port"])
                 for d, i in served.endpoints["domains"].items()}
        assert ports == {"corp.example": (base, base + 1, base + 2),
                         "mail.example": (base + 10, base + 11, base + 12)}
        second = run_cli("serve", "--json", "--port-base", str(base), timeout=30)
        assert second.returncode == 2
        assert second.stdout == ""
        lines = second.stderr.splitlines()
        assert len(lines) == 1, second.stderr
        m = re.fullmatch(r"recall-lab: port 127\.0\.0\.1:(\d+) \((\S+) (IMAP|submission|MX)\) is already in use",
                         lines[0])
        assert m, lines[0]
        assert int(m.group(1)) in ports[m.group(2)]
    finally:
        code, err = served.stop()
    assert code == 0 and err == ""


def test_port_in_use_names_that_port(tmp_path):
    base, held = _free_port_base()
    with held, socket.socket() as squatter:
        held.close()
        squatter.bind(("127.0.0.1", base + 11))  # mail.example's submission port
        squatter.listen()
        result = run_cli("serve", "--json", "--port-base", str(base), timeout=30)
    assert result.returncode == 2
    assert result.stderr == f"recall-lab: port 127.0.0.1:{base + 11} (mail.example submission) is already in use\n"


def test_maildir_lab_keeps_mail_across_a_restart_and_can_still_recall(tmp_path):
    store = tmp_path / "mail"
    first = start_serve(tmp_path, "--store", f"maildir:{store}", name="first")
    try:
        mid = send(first, "alice@corp.example", "--to", "bob@corp.example", "--to", "dave@mail.example",
                   "--subject", "Persist", "--body", "keep me")
        bob = first.imap("bob@corp.example")
        info = bob.select_folder("INBOX")
        uid = message_ids(bob)[mid]
        bob.select_folder("INBOX")
        bob.add_flags([uid], [b"\\Flagged"])
        bob.logout()
        dave = first.imap("dave@mail.example")
        assert mid in message_ids(dave)
        dave.logout()
    finally:
        code, err = first.stop(signal.SIGINT)
    assert code == 0 and "Traceback" not in err

    second = start_serve(tmp_path, "--store", f"maildir:{store}", name="second")
    try:
        bob = second.imap("bob@corp.example")
        assert bob.select_folder("INBOX")[b"UIDVALIDITY"] == info[b"UIDVALIDITY"]
        assert message_ids(bob) == {mid: uid}
        assert b"\\Flagged" in bob.get_flags([uid])[uid]
        dave = second.imap("dave@mail.example")
        assert list(message_ids(dave)) == [mid], "delivered once: not lost, not duplicated by the restart"
        dave.logout()
        # alice's Sent copy survived too: she can still recall it
        result = recall(second, mid)
        assert result.returncode == 0, result.stderr
        assert re.search(r"^\s+bob@corp\.example\s+recalled\s", result.stdout, re.M), result.stdout
        assert mid not in message_ids(bob)
        bob.logout()
    finally:
        code, err = second.stop(signal.SIGTERM)
    assert code == 0 and "Traceback" not in err


def test_dovecot_serves_the_labs_maildir(tmp_path):
    dovecot = pytest.importorskip("recall_lab.harness.dovecot")
    if dovecot.dovecot_binary() is None:
        pytest.skip("dovecot not installed")
    with dovecot.reachable_temp_dir() as store:
        served = start_serve(tmp_path, "--store", f"maildir:{store}")
        try:
            mid = send(served, "alice@corp.example", "--to", "bob@corp.example", "--subject", "For Dovecot",
                       "--body", "read me elsewhere")
        finally:
            code, _ = served.stop()
        assert code == 0
        import imapclient

        with dovecot.DovecotServer(tmp_path / "dovecot", {"bob@corp.example": "pw"},
                                   mail_root=store / "corp.example" / "mail") as dv:
            client = imapclient.IMAPClient("127.0.0.1", dv.port, ssl=False, timeout=10)
            client.login("bob@corp.example", "pw")
            assert mid in message_ids(client)
            client.logout()


def test_serve_without_json_prints_the_accounts_table(tmp_path):
    """The human form: a table of endpoints and the accounts, then a hint how to stop."""
    proc = subprocess.Popen([*cli_command(), "serve"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=cli_env())
    try:
        lines = []
        for line in proc.stdout:  # the table is printed in one go once the lab is ready
            lines.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(lines)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and err == ""
    for needle in ("corp.example", "mail.example", "organisation", "external", "alice@corp.example",
                   "alice-password", "dave@mail.example", "dave-password", "Ctrl-C"):
        assert needle in text, needle


def test_a_second_lab_on_the_same_maildir_is_refused(tmp_path):
    """QA F13 (fixed 08:02 UTC): both labs started and handed out the same UIDs."""
    store = tmp_path / "mail"
    first = start_serve(tmp_path, "--store", f"maildir:{store}", name="first")
    try:
        second = subprocess.Popen([*cli_command(), "serve", "--json", "--store", f"maildir:{store}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                  text=True, env=cli_env())
        try:
            line = first_line(second)  # the endpoints line if it started, None if it exited
        finally:
            if second.poll() is None:
                second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=15)
        assert line is None, "a second lab started on a maildir another lab holds"
        assert second.returncode == 2
        assert len(err.splitlines()) == 1 and str(store) in err, err
    finally:
        first.stop()
