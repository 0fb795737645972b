"""The installed package: one name (`recall_lab`), so a user's own `harness` package is never shadowed.

Why build and install the wheel: an editable install maps names to this checkout, which hides what a real
install puts into site-packages. The wheel goes into a fresh virtualenv (its dependencies are read from this
environment's site-packages, so the test needs no network), next to a user project that has a package of its
own called `harness`; the plugin's fixture then serves that project's test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

USER_TEST = '''
import smtplib
from email.message import EmailMessage

import harness  # the user's own package of that name
import recall_lab


def test_the_plugin_serves_a_project_with_its_own_harness(mail_lab):
    assert harness.WHOSE == "the user's"
    assert "site-packages" in recall_lab.__file__
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@corp.example", "bob@corp.example", "Hello"
    msg["Message-ID"] = "<hello@corp.example>"
    msg.set_content("hi")
    sub = mail_lab.submission("corp.example")
    with smtplib.SMTP(sub.host, sub.port, local_hostname="localhost") as smtp:
        smtp.login("alice@corp.example", mail_lab.password("alice@corp.example"))
        smtp.send_message(msg)
    assert mail_lab.wait_for_message("bob@corp.example", "<hello@corp.example>").mailbox == "INBOX"
'''


def test_the_packages_listed_are_the_folders():
    """pyproject lists the packages by hand (a folder mapped under another name cannot be found); the list
    must follow the folders."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"recall_lab"} | {
        "recall_lab." + str(p.parent.relative_to(ROOT)).replace("/", ".")
        for top in ("harness", "fake_servers") for p in (ROOT / top).rglob("__init__.py")}
    assert set(config["packages"]) == folders


def test_the_wheel_installs_beside_a_users_harness_package(tmp_path):
    source, wheels = tmp_path / "source", tmp_path / "wheels"  # built from a copy: the build leaves files behind
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".hypothesis", ".ruff_cache", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("recall_lab-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--disable-pip-version-check", str(wheel)], check=True, capture_output=True, timeout=300)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    assert {p.name for p in site.iterdir()} >= {"recall_lab"}
    assert not (site / "harness").exists() and not (site / "fake_servers").exists()
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")  # pytest, aiosmtpd, ...

    project = tmp_path / "project"
    (project / "harness").mkdir(parents=True)
    (project / "harness" / "__init__.py").write_text('WHOSE = "the user\'s"\n')
    (project / "tests").mkdir()
    (project / "tests" / "test_mail.py").write_text(USER_TEST)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_", "PYTHONPATH"))}
    env["PYTHONPATH"] = str(project)
    result = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout, result.stdout
