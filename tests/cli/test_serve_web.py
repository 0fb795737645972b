"""`recall-lab serve` and its web server: the "web" entry of the endpoints JSON, the console URL, the flags."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.cli.test_serve import CLI, _first_line, _start, read_table


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return out, err


def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_json_has_the_web_entry_and_the_api_needs_its_token():
    proc = _start("--json")
    try:
        data = _first_line(proc)
        web = data["web"]
        assert set(web) >= {"host", "port", "token"} and web["host"] == "127.0.0.1"
        assert set(data["domains"]) == {"corp.example", "mail.example"}  # keys added, none removed
        base = f"http://127.0.0.1:{web['port']}"
        assert web["console"] == f"{base}/?token={web['token']}"
        status, body = _get(f"{base}/api/v1/")
        assert status == 401 and body["error"] == "unauthorized"
        status, body = _get(f"{base}/api/v1/", "not-the-token-at-all")
        assert status == 401
        status, body = _get(f"{base}/api/v1/", web["token"])
        assert status == 200
    finally:
        if proc.poll() is None:
            _stop(proc)


def test_serve_web_port_and_token_from_the_environment():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = "a-token-from-the-environment-1234"
    proc = subprocess.Popen([*CLI, "serve", "--json", "--web-port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "RECALL_LAB_WEB_TOKEN": token})
    try:
        web = _first_line(proc)["web"]
        assert web["port"] == port and web["token"] == token
        assert _get(f"http://127.0.0.1:{port}/api/v1/", token)[0] == 200
    finally:
        if proc.poll() is None:
            _stop(proc)


def test_serve_table_prints_the_console_url():
    proc = _start()
    try:
        seen = read_table(proc)
        assert "console (open in a browser): http://127.0.0.1:" in seen and "/?token=" in seen
    finally:
        if proc.poll() is None:
            _stop(proc)


def test_serve_no_web():
    proc = _start("--json", "--no-web")
    try:
        assert "web" not in _first_line(proc)
    finally:
        if proc.poll() is None:
            _stop(proc)


@pytest.mark.parametrize(("args", "message"), [
    (["--host", "192.0.2.1"], "not a loopback address"),  # refused before anything binds
    (["--web-port", "70000"], "--web-port 70000"),
    (["--web-token", "short"], "at least 16 characters"),
])
def test_serve_web_mistakes_are_one_line_exit_2(args, message):
    proc = subprocess.run([*CLI, "serve", "--json", *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_serve_web_port_in_use_is_one_line_exit_2():
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        proc = subprocess.run([*CLI, "serve", "--json", "--web-port", str(port)], capture_output=True, text=True,
                              timeout=30)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], proc.stderr
