"""The command itself: --version, shell completion offered."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

CLI = [sys.executable, "-c", "from recall_lab.harness.cli import main; main()"]


def test_version_prints_the_installed_version():
    proc = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.strip() == f"recall-lab {version('recall-lab')}"


def test_shell_completion_is_offered():
    proc = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=30,
                          env={"COLUMNS": "120", "PATH": ""})
    assert proc.returncode == 0 and "--install-completion" in proc.stdout and "--show-completion" in proc.stdout
