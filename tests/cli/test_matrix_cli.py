"""`recall-lab matrix`: the table, JSON and HTML outputs, and one-line errors."""

import json
import re
import socket
import subprocess
import sys

import pytest

from recall_lab.harness.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.mark.parametrize(("args", "message"), [
    (["matrix", "--scenario", "nope"], "unknown scenario 'nope'"),
    (["matrix", "--mode", "hybrid"], "unknown recall mode 'hybrid'"),
    (["matrix", "--trials", "0"], "--trials must be at least 1"),
    (["matrix", "--concurrency", "0"], "--concurrency must be at least 1"),
    (["matrix", "--config", "/nonexistent/lab.toml"], "cannot read config"),
    (["matrix", "--json", "/nonexistent/dir/out.json"], "cannot write /nonexistent/dir/out.json"),
    (["demo", "--html", "/nonexistent/dir/out.html"], "cannot write /nonexistent/dir/out.html"),
])
def test_errors_are_one_line_and_non_zero(args: list[str], message: str, capsys) -> None:
    code, out, err = run_cli(args, capsys)
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("recall-lab: ") and message in err
    assert "Traceback" not in out + err


def test_bad_scenario_file_is_one_line(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ncondition = "c"\nsummary = "s"\nopen_delay = { dist = "gamma" }\n')
    code, _out, err = run_cli(["matrix", "--scenario", str(bad)], capsys)
    assert code == 2 and err.strip() == "recall-lab: bad.toml.open_delay: dist must be one of fixed, uniform, " \
        "exponential, lognormal, mixture, never, got 'gamma'"


def test_bad_lab_config_is_one_line(tmp_path, capsys) -> None:
    cfg = tmp_path / "lab.toml"
    cfg.write_text('[domains."corp.example"]\nrole = "boss"\n')
    code, _out, err = run_cli(["matrix", "--config", str(cfg), "--scenario", "unopened"], capsys)
    assert code == 2 and err.startswith("recall-lab: config ") and "domain corp.example: role must be" in err \
        and err.count("\n") == 1


@pytest.mark.parametrize(("config", "message"), [
    ('[domains."corp.example"]\nrole = "organisation"\nusers = ["alice", "bob"]\n'
     '[domains."corp.example".policies]\npurge_deleted_after = "soon"\n'
     '[domains."mail.example"]\nusers = ["dave"]\n', "bad lab configuration: policies.purge_deleted_after"),
    ('[domains."other.example"]\nusers = ["alice"]\n', "the scenarios need the domains corp.example and mail.example"),
])
def test_lab_config_the_scenarios_cannot_use_is_one_line(tmp_path, capsys, config: str, message: str) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(config)
    code, _out, err = run_cli(["matrix", "--config", str(path), "--scenario", "unopened", "--trials", "1"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1


def test_port_in_use_is_one_line(capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _out, err = run_cli(["matrix", "--port-base", str(port), "--trials", "1", "--scenario", "unopened"],
                                  capsys)
    assert code == 2 and "already in use" in err and err.count("\n") == 1


def test_list_names_every_builtin(capsys) -> None:
    code, out, _err = run_cli(["matrix", "--list"], capsys)
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()][:4] == ["unopened", "same-org-desktop", "web-client",
                                                                  "external-provider"]


def test_matrix_writes_json_and_self_contained_html(tmp_path) -> None:
    out_json, out_html = tmp_path / "m.json", tmp_path / "m.html"
    proc = subprocess.run([sys.executable, "-m", "recall_lab.harness.cli", "matrix", "--trials", "2", "--seed", "5",
                           "--scenario", "same-org-desktop", "--scenario", "external-provider",
                           "--json", str(out_json), "--html", str(out_html)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "The recipient uses a different email provider" in proc.stdout
    # Condition | Article | Likelihood | rate: the article's None, then the measured None
    assert re.search(r"different email provider\s*│\s*None\s*│\s*None\s*│\s*0\.00 \[0\.00-0\.66\]", proc.stdout)
    data = json.loads(out_json.read_text())
    assert [row["scenario"] for row in data["table"]] == ["same-org-desktop", "external-provider"]
    assert data["seed"] == 5 and len(data["trials"]) == 8
    assert all(t["error"] == "" for t in data["trials"])
    assert {t["verdict"] for t in data["trials"] if t["scenario"] == "external-provider"} == {"impossible"}
    assert any("X-Recall-Message-ID: <trial.same-org-desktop" in line
               for line in data["transcripts"]["same-org-desktop"])
    page = out_html.read_text()
    assert "<svg" in page and "X-Recall-Message-ID" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|<script|<link\b""", page)


def test_same_seed_same_json_table(tmp_path) -> None:
    tables = []
    for name in ("a.json", "b.json"):
        path = tmp_path / name
        proc = subprocess.run([sys.executable, "-m", "recall_lab.harness.cli", "matrix", "-q", "--trials", "3", "--seed", "9",
                               "--scenario", "web-client", "--json", str(path)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        data = json.loads(path.read_text())
        tables.append((data["table"], [(t["mode"], t["index"], t["events"], t["verdict"]) for t in data["trials"]]))
    assert tables[0] == tables[1]
