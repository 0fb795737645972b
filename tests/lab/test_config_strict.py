"""A lab config refuses mistakes: an unknown key or a wrong type is one error naming the key, its line and what
is allowed there, instead of a lab that starts without the accounts or the setting its author meant."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from recall_lab.fake_servers.domain import DomainServer, DomainSpec
from recall_lab.fake_servers.store import open_store
from recall_lab.harness.config import ConfigError, LabConfig, load_config
from recall_lab.harness.lab import Lab, LabStartError

GOOD = """\
[domains."corp.example"]
role = "organisation"
users = ["alice", "bob"]

[domains."corp.example".policies]
recall_mode = "legacy"
"""


def _load(tmp_path: Path, text: str) -> LabConfig:
    path = tmp_path / "lab.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_config(path)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_good_config_loads(tmp_path):
    config = _load(tmp_path, GOOD)
    assert config.domain("corp.example").policies == {"recall_mode": "legacy"}
    assert list(config.domain("corp.example").users) == ["alice@corp.example", "bob@corp.example"]


@pytest.mark.parametrize(("text", "line", "words"), [
    # `user` for `users`: the lab would have started with no accounts at all
    ('[domains."corp.example"]\nrole = "organisation"\nuser = ["a"]\n', 3,
     ["unknown key domains.corp.example.user", "did you mean users?", "allowed here: role, users"]),
    # a misspelt policy setting was ignored: the lab ran cloud recall when legacy was meant
    (GOOD.replace("recall_mode", "recall_mod"), 6,
     ["unknown key domains.corp.example.policies.recall_mod", "did you mean recall_mode?", "allowed:"]),
    ('polcy_modules = []\n[domains."a.example"]\nusers = ["x"]\n', 1,
     ["unknown key polcy_modules", "did you mean policy_modules?"]),
    ('[relay]\nretry_delay = [1]\n[domains."a.example"]\nusers = ["x"]\n', 2, ["unknown key relay.retry_delay"]),
    ('[limits]\nmax_conections = 4\n[domains."a.example"]\nusers = ["x"]\n', 2, ["limits.max_conections"]),
    ('[domains."a.example"]\nusers = ["x", 3]\n', 2, ["users must be a list of names (strings)"]),
    ('[domains."a.example"]\nusers = { "x@a.example" = 5 }\n', 2, ["each password must be a string"]),
    ('[domains."a.example"]\nusers = ["x"]\n[domains."a.example".passwords]\n"x@a.example" = 1\n', 3,
     ["passwords must be a table"]),
    # a setting no policy of that domain reads: the external provider runs no recall policy
    ('[domains."mail.example"]\nrole = "external"\nusers = ["d"]\n[domains."mail.example".policies]\n'
     'recall_mode = "cloud"\n', 5, ["no policy of mail.example reads it", "its policies: delayed_send"]),
])
def test_mistakes_name_the_key_its_line_and_what_is_allowed(tmp_path, text, line, words):
    message = _error(tmp_path, text)
    assert f"lab.toml, line {line}:" in message, message
    for word in words:
        assert word in message, message


def test_the_cli_says_it_in_one_line_and_exits_2(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "lab.toml"
    path.write_text(GOOD.replace("recall_mode", "recall_mod"), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", "from recall_lab.harness.cli import main; main()", "serve",
                           "--json", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "line 6" in proc.stderr and "recall_mod" in proc.stderr


async def test_a_python_config_with_an_unknown_setting_does_not_start():
    """The same rule holds for configs made in Python (and scenario policies): the domain server checks it."""
    config = LabConfig.from_dict({"domains": {"corp.example": {"role": "organisation", "users": ["alice"]}}})
    config.domain("corp.example").policies["recal_mode"] = "legacy"
    with pytest.raises(LabStartError, match="no policy reads recal_mode"):
        async with Lab(config, web=False):
            pass


async def test_a_policy_that_declares_nothing_lets_any_key_through():
    """A user's policy registered without `settings` cannot say which keys it reads: nothing is refused."""
    from recall_lab.fake_servers.pipeline import Verdict, register_policy, unregister_policy

    class Quiet:
        name = "quiet"

        def __init__(self, settings, services):
            self.settings = settings

        async def on_delivery(self, delivery, services):
            return Verdict.CONTINUE

    register_policy("quiet", Quiet)
    try:
        spec = DomainSpec(name="a.example", role="external", users={"x@a.example": "pw"},
                          policies={"anything_goes": 1}, pipeline=["quiet"])
        server = DomainServer(spec, open_store("memory"))
        await server.open()
        await server.run()
        await server.stop()
    finally:
        unregister_policy("quiet")


def test_the_example_config_loads_and_shows_every_key():
    """examples/lab.toml is the commented reference: it must load, and name every key a config may have."""
    import re

    from recall_lab.fake_servers.pipeline import registered_policies
    from recall_lab.harness.config import CAPTURE_KEYS, DOMAIN_KEYS, LIMIT_KEYS, RELAY_KEYS, TOP_KEYS

    path = Path(__file__).resolve().parents[2] / "examples" / "lab.toml"
    config = load_config(path)
    assert [d.name for d in config.domains] == ["corp.example", "mail.example"]
    text = path.read_text(encoding="utf-8")
    written = set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, flags=re.MULTILINE))
    settings = set().union(*(r.settings or set() for r in registered_policies().values()
                             if r.factory.__module__.startswith("recall_lab.fake_servers.")))  # the lab's own
    missing = (set(TOP_KEYS) | set(RELAY_KEYS) | set(DOMAIN_KEYS) | set(LIMIT_KEYS) | set(CAPTURE_KEYS)
               | settings) - written - {
        "relay", "routes", "limits", "capture", "domains", "passwords", "policies", "delayed_send"}  # tables; an alias
    assert not missing, f"examples/lab.toml does not show: {sorted(missing)}"
