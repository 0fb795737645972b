"""The Docker image as documented, checked without a Docker engine: the entry point's argument handling, the
endpoints JSON naming a host a client can use, and what the build context sends."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

from recall_lab.harness.commands.serve import advertised
from tests.cli.test_serve import CLI, _first_line

ROOT = Path(__file__).resolve().parent.parent


def _entrypoint():  # noqa: ANN202 - the module loaded from docker/entrypoint.py
    spec = importlib.util.spec_from_file_location("docker_entrypoint", ROOT / "docker" / "entrypoint.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_arguments_after_the_image_name_are_appended_to_the_defaults():
    build = _entrypoint().build_argv
    argv = build(["--config", "/data/lab.toml"], {})
    assert argv[:2] == ["recall-lab", "serve"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and argv[argv.index("--port-base") + 1] == "10000"
    assert argv[-2:] == ["--config", "/data/lab.toml"]  # kept, after the defaults
    assert "--no-web" in argv  # no token: a web server on 0.0.0.0 would refuse to start
    with_token = build([], {"RECALL_LAB_WEB_TOKEN": "x" * 20})
    assert with_token[with_token.index("--web-port") + 1] == "10080" and "--no-web" not in with_token
    own = build(["--no-web"], {"RECALL_LAB_WEB_TOKEN": "x" * 20})
    assert own.count("--no-web") == 1 and "--web-port" not in own


def test_a_repeated_option_takes_the_users_value():
    """The defaults say --store memory; a user's --store after them wins (here a bad one, to see which won)."""
    proc = subprocess.run([*CLI, "serve", "--json", "--store", "memory", "--store", "tape:/dev/null"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "tape:/dev/null" in proc.stderr


def test_the_endpoints_name_the_advertised_host():
    data = {"domains": {"a.example": {"imap": {"host": "0.0.0.0", "port": 10000}, "users": {}}},
            "web": {"host": "0.0.0.0", "port": 10080, "token": "t", "url": "http://0.0.0.0:10080",
                    "console": "http://0.0.0.0:10080/?token=t", "mail": "http://0.0.0.0:10080/mail/",
                    "api": "http://0.0.0.0:10080/api/v1/"}}
    out = advertised(data, "127.0.0.1")
    assert out["domains"]["a.example"]["imap"] == {"host": "127.0.0.1", "port": 10000}
    assert out["web"]["console"] == "http://127.0.0.1:10080/?token=t"
    assert "0.0.0.0" not in str(out)


def test_serve_writes_the_advertised_host():
    proc = subprocess.Popen([*CLI, "serve", "--json", "--no-web", "--advertise-host", "lab.example"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        data = _first_line(proc)
        assert {data["domains"][d][k]["host"] for d in data["domains"] for k in ("imap", "submission", "mx")} \
            == {"lab.example"}
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_the_build_context_leaves_out_what_the_image_does_not_need():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests"} <= ignored
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    for needed in ("COPY src ./src", "COPY fake_servers", "COPY harness", "docker/entrypoint.py"):
        assert needed in dockerfile
    for path in ("src", "fake_servers", "harness", "docker", "pyproject.toml", "README.md"):
        assert path not in ignored
