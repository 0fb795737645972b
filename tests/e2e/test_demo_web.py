"""`recall-lab demo --web` end to end, in a subprocess: the console URL is printed first and answers while the
walk runs (the token sets the cookie; the page shows the narrated lab's timeline), and the run exits 0.

One short condition at a high speed with --pause 0 keeps it to a few seconds. Readiness is read from the
demo's own output, never guessed: the URL line comes before any lab starts, and the walk's first narrated event
("t=0:00 send") is printed from inside the running lab, so the console is up from then until the condition's
observation ends (about 7 s at --speed 200).
"""

from __future__ import annotations

import http.client
import queue
import re
import subprocess
import threading

from .conftest import cli_command, cli_env

URL = re.compile(r"^Lab console: http://127\.0\.0\.1:(\d+)/\?token=(\S+)$")
DEADLINE = 60.0


def _reader(stream, lines: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


def read_until(lines: queue.Queue, pattern: re.Pattern[str], seen: list[str]) -> re.Match[str]:
    while True:
        line = lines.get(timeout=DEADLINE)
        if line is None:
            raise AssertionError("the demo ended before printing " + pattern.pattern + ":\n" + "".join(seen))
        seen.append(line)
        if found := pattern.search(line.rstrip("\n")):
            return found


def get(port: int, path: str, cookie: str | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
    response = conn.getresponse()
    response.body = response.read()  # type: ignore[attr-defined]
    conn.close()
    return response


def test_demo_web_prints_the_console_url_which_answers_while_the_walk_runs() -> None:
    proc = subprocess.Popen([*cli_command(), "demo", "--web", "--pause", "0", "--scenario", "unopened",
                             "--no-table", "--speed", "200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=cli_env())
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        url = read_until(lines, URL, seen)
        port, token = int(url.group(1)), url.group(2)
        read_until(lines, re.compile(r"t=0:00 +send +alice@corp\.example submits <(trial\.unopened\.cloud\.0\.\d+@"
                                     r"corp\.example)>"), seen)
        mid = re.search(r"<(trial\.unopened\.cloud\.0\.\d+@corp\.example)>", seen[-1]).group(1)

        denied = get(port, "/")
        assert denied.status == 401
        opened = get(port, f"/?token={token}")
        assert opened.status == 303 and opened.getheader("Location") == "/"
        cookie = opened.getheader("Set-Cookie").split(";")[0]
        page = get(port, "/", cookie)
        assert page.status == 200
        text = page.body.decode()  # type: ignore[attr-defined]
        assert "corp.example" in text and mid in text  # the narrated lab's timeline has the original
        assert get(port, "/console/recalls", cookie).status == 200

        proc.wait(timeout=DEADLINE)
        err = proc.stderr.read()
        while (line := lines.get(timeout=DEADLINE)) is not None:  # the reader thread has the rest of stdout
            seen.append(line)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "=> cloud : recalled" in "".join(seen)


def test_web_port_without_web_is_one_line_error() -> None:
    result = subprocess.run([*cli_command(), "demo", "--web-port", "8123", "--no-table"], capture_output=True,
                            text=True, timeout=DEADLINE, env=cli_env(), stdin=subprocess.DEVNULL)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--web-port needs --web" in result.stderr
