"""The lab config's [capture] table: its presence turns capture mode on, and a mistake is one clear error."""

from __future__ import annotations

import textwrap

import pytest

from recall_lab.fake_servers.capture import CaptureSettings
from recall_lab.harness.config import ConfigError, LabConfig, load_config

DOMAINS = {"domains": {"corp.example": {"role": "organisation", "users": ["alice"]}}}


def test_the_table_turns_capture_on_and_enabled_false_turns_it_off():
    assert LabConfig.from_dict(DOMAINS).capture is None
    assert LabConfig.from_dict({**DOMAINS, "capture": {}}).capture == CaptureSettings()
    assert LabConfig.from_dict({**DOMAINS, "capture": {"enabled": False, "password": "p"}}).capture is None
    config = LabConfig.from_dict({**DOMAINS, "capture": {"password": "p", "max_messages": 5, "max_bytes": 10**6,
                                                         "max_addresses": 7, "max_message_size": 1000}})
    assert config.capture == CaptureSettings(password="p", max_messages=5, max_bytes=10**6, max_addresses=7,
                                             max_message_size=1000)
    assert LabConfig.from_dict(config.to_dict()).capture == config.capture  # to_dict round trip
    assert "capture" not in LabConfig.from_dict(DOMAINS).to_dict()


@pytest.mark.parametrize(("table", "needle"), [
    ({"enable": True}, "unknown key capture.enable (did you mean enabled?)"),
    ({"enabled": "yes"}, "capture.enabled must be true or false"),
    ({"password": ""}, "capture.password must be a non-empty string"),
    ({"max_messages": 0}, "capture.max_messages must be a positive whole number"),
    ({"max_bytes": 1.5}, "capture.max_bytes must be a positive whole number"),
    ({"max_bytes": 100, "max_message_size": 1000}, "max_message_size (1000) must not exceed max_bytes (100)"),
])
def test_mistakes_are_named(table, needle):
    with pytest.raises(ConfigError) as caught:
        LabConfig.from_dict({**DOMAINS, "capture": table})
    assert needle in str(caught.value)


def test_a_file_error_names_the_line(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text(textwrap.dedent("""\
        [capture]
        password = "p"
        max_mesages = 10
        [domains."corp.example"]
        users = ["alice"]
        """))
    with pytest.raises(ConfigError, match=r"line 3: unknown key capture.max_mesages \(did you mean max_messages"):
        load_config(path)
    path.write_text('capture = true\n[domains."corp.example"]\nusers = ["alice"]\n')
    with pytest.raises(ConfigError, match=r"\[capture\] must be a table"):
        load_config(path)
