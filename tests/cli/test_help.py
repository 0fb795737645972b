"""The help a person reads, and output piped into a file or another program.

`--help` of every command shows words (FILE, N, SECONDS, ADDRESS, TEXT) where typer would print Python types
(`<list[str]>`, `<bool>`, `<path>`), nothing after a flag, and marks required options. With stdout a pipe, the
commands do not hard-wrap: a long condition label, a narration line or a URL stays on one line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from recall_lab.harness.cli import COMMAND_MODULES, build_app

# Not `-m recall_lab.harness.cli`: run as __main__, its CliError would be a different class from the one commands raise.
CLI = [sys.executable, "-c", "from recall_lab.harness.cli import main; main()"]
PYTHON_TYPES = re.compile(r"<(list\[|bool>|str>|int>|float>|path>|file>|text>)")
#: The longest built-in condition label (delayed-send-outlook-web).
LONG_LABEL = ("Outlook on the web / new Outlook undo send, 10 s: cancelled when noticed (recipient at another "
              "provider)")


def _help(*args: str) -> str:
    result = CliRunner().invoke(build_app(), [*args, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", ["", *COMMAND_MODULES])
def test_help_shows_no_python_types(command):
    text = _help(*([command] if command else []))
    assert "--help" in text
    assert not PYTHON_TYPES.search(text), PYTHON_TYPES.search(text)


def test_flags_show_no_metavar_and_values_show_words():
    serve = _help("serve")
    assert re.search(r"--json\s+Print the endpoints", serve)  # a flag: nothing between the name and its help
    assert re.search(r"--verbose\s+-v\s+Log to stderr", serve)
    assert re.search(r"--config\s+FILE\s", serve) and re.search(r"--tls-dir\s+DIR\s", serve)
    assert re.search(r"--login-timeout\s+SECONDS\s", serve) and re.search(r"--port-base\s+PORT\s", serve)
    assert re.search(r"--log-format\s+text\|json\s", serve)
    send = _help("send")
    assert re.search(r"--to\s+ADDRESS\s", send) and re.search(r"--from\s+ADDRESS\s", send)
    assert re.search(r"--body\s+TEXT\s", send)
    assert re.search(r"--trials\s+-n\s+N\s", _help("matrix"))


def test_required_options_are_marked():
    send = _help("send")
    for name in ("--endpoints", "--from", "--subject"):
        line = next(line for line in send.splitlines() if f" {name} " in line)
        assert "*" in line.split(name)[0] and "[required]" in line, line
    to = next(line for line in send.splitlines() if " --to " in line)
    assert "*" not in to and "[required]" not in to


def test_demo_and_matrix_share_one_speed():
    speeds = [re.search(r"--speed\s.*?\[default: ([0-9.]+)\]", _help(c), re.S).group(1) for c in ("demo", "matrix")]
    assert speeds[0] == speeds[1], speeds


def _piped_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("COLUMNS", None)  # rich would take it as the width; a pipe has none
    return env


def test_piped_matrix_and_demo_keep_long_labels_on_one_line():
    matrix = subprocess.run([*CLI, "matrix", "-n", "1", "--scenario", "delayed-send-outlook-web"],
                            capture_output=True, text=True, timeout=120, env=_piped_env())
    assert matrix.returncode == 0, matrix.stderr
    assert any(LONG_LABEL in line for line in matrix.stdout.splitlines()), matrix.stdout
    assert all(len(line) == len(line.rstrip()) for line in matrix.stdout.splitlines())  # no padding to a width

    demo = subprocess.run([*CLI, "demo", "-n", "1", "--scenario", "delayed-send-outlook-web", "--no-table"],
                          capture_output=True, text=True, timeout=120, env=_piped_env())
    assert demo.returncode == 0, demo.stderr
    from recall_lab.harness.scenarios.catalogue import find_scenario

    narration = " ".join(find_scenario("delayed-send-outlook-web").narration.split())
    lines = demo.stdout.splitlines()
    assert any(LONG_LABEL in line for line in lines), demo.stdout  # the condition's heading
    assert any(narration in line for line in lines), demo.stdout


def test_piped_serve_table_keeps_urls_on_one_line():
    proc = subprocess.Popen([*CLI, "serve"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_piped_env())
    try:
        seen = []
        while not seen or "Ctrl-C" not in seen[-1]:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            seen.append(line)
        web = next(line for line in seen if line.startswith("webmail: "))
        assert re.fullmatch(r"webmail: http://\S+   API: http://\S+ \(Authorization: Bearer \S+\)\n", web), web
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()

