"""Faults from a TOML config and from `recall-lab serve --fault`: applied over real sockets, and a bad rule is
one line (exit 2 on the command line; the file's line in the config)."""

from __future__ import annotations

import json
import smtplib
import subprocess

import pytest

from recall_lab.harness.config import ConfigError, LabConfig, load_config
from recall_lab.harness.lab import Lab
from tests.cli.test_recall_cli import CLI, _stop, run
from tests.smtp.smtp_helpers import LineClient

CONFIG = """
[domains."corp.example"]
role = "organisation"
users = ["alice"]
[domains."mail.example"]
role = "external"
users = ["dave"]
[domains."mail.example".faults]
seed = 3
rules = ["rcpt=450:next=1", { mail = 554, on = "submission" }]
"""


async def test_toml_faults_apply_and_round_trip(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    domain = config.domain("mail.example")
    assert domain.fault_seed == 3 and len(domain.faults) == 2
    again = LabConfig.from_dict(config.to_dict())
    assert again.domain("mail.example").to_dict()["faults"] == {
        "seed": 3, "rules": ["rcpt=450:next=1", "mail=554:on=submission"]}
    async with Lab(config, web=False) as lab:
        async with LineClient.session(lab.mx("mail.example")) as c:
            await c.ehlo()
            await c.cmd("MAIL FROM:<x@corp.example>")
            assert (await c.cmd("RCPT TO:<dave@mail.example>")).startswith("450 4.2.1")
            assert (await c.cmd("RCPT TO:<dave@mail.example>")).startswith("250")


@pytest.mark.parametrize(("faults", "line", "says"), [
    ('seed = 1\nrules = ["rcpt=99"]', 10, "domains.mail.example.faults.rules[0]: reply code 99 is not a 4xx"),
    ('seed = "x"', 9, "faults.seed must be a whole number"),
    ('rule = []', 9, "unknown key domains.mail.example.faults.rule (did you mean rules?)"),
    ('rules = [{ drop = "mail", p = "often" }]', 9, "p= must be a number"),
])
def test_bad_fault_tables_name_their_line(tmp_path, faults, line, says):
    path = tmp_path / "lab.toml"
    path.write_text(CONFIG.split("[domains.\"mail.example\".faults]")[0]
                    + '[domains."mail.example".faults]\n' + faults + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert says in str(err.value)
    assert f"lab.toml, line {line}: " in str(err.value)


@pytest.mark.parametrize(("args", "says"), [
    (["--fault", "mail.example:rcpt=250"], "--fault 'mail.example:rcpt=250': reply code 250 is not a 4xx or 5xx"),
    (["--fault", "nowhere.example:rcpt=450"], "no domain nowhere.example in this lab"),
    (["--fault", "rcpt=450"], "must be DOMAIN:ACTION=VALUE"),
])
def test_bad_fault_flag_is_one_line_exit_2(args, says):
    done = run("serve", "--no-web", *args)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert says in line, line


def test_serve_fault_flag_applies(tmp_path):
    proc = subprocess.Popen([*CLI, "serve", "--json", "--no-web", "--fault", "mail.example:rcpt=451:next=1",
                             "--fault", "mail.example:delay=0:at=mail", "--fault-seed", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        mx = json.loads(line)["domains"]["mail.example"]["mx"]
        with smtplib.SMTP(mx["host"], mx["port"], local_hostname="localhost", timeout=10) as smtp:
            smtp.ehlo()
            smtp.mail("x@corp.example")
            assert smtp.rcpt("dave@mail.example")[0] == 451
            assert smtp.rcpt("dave@mail.example")[0] == 250
    finally:
        _stop(proc)
