"""scns configuration: the environment wins over the file, the file over the defaults."""

import os

import pytest

from scns_cli.config import DEFAULT_URL, config_path, load, write_value
from scns_cli.errors import CliError


def test_defaults_without_anything(tmp_path):
    config = load({"HOME": str(tmp_path)})
    assert config.url == DEFAULT_URL == "http://127.0.0.1:8000"
    assert config.token is None and config.partition == "default"
    assert config.path == tmp_path / ".config" / "scns" / "config.toml"


def test_the_file_under_xdg_config_home_and_the_environment_wins(tmp_path):
    env = {"HOME": "/nowhere", "XDG_CONFIG_HOME": str(tmp_path)}
    path = config_path(env)
    assert path == tmp_path / "scns" / "config.toml"
    write_value(path, "url", "https://scns.example.org")
    write_value(path, "token", 'a"b\\c')
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    config = load(env)
    assert (config.url, config.token) == ("https://scns.example.org", 'a"b\\c')
    assert config.sources["url"] == "config file" and not config.warnings
    config = load({**env, "SCNS_URL": "http://other:1", "SCNS_TOKEN": "t"})
    assert (config.url, config.token, config.sources["token"]) == ("http://other:1", "t", "SCNS_TOKEN")
    write_value(path, "url", None)
    assert load(env).url == DEFAULT_URL and load(env).token == 'a"b\\c'


def test_a_readable_token_file_is_warned_about_and_bad_files_are_errors(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    path = config_path(env)
    write_value(path, "token", "secret")
    os.chmod(path, 0o644)
    assert "chmod 600" in load(env).warnings[0]
    path.write_text("url = [1")
    with pytest.raises(CliError, match="not valid TOML"):
        load(env)
    path.write_text('colour = "yes"\n')
    with pytest.raises(CliError, match="unknown key 'colour'"):
        load(env)
    with pytest.raises(CliError, match="unknown config key"):
        write_value(path, "colour", "x")


def test_the_token_is_masked_when_shown(tmp_path):
    shown = load({"XDG_CONFIG_HOME": str(tmp_path), "SCNS_TOKEN": "abcdefghijklmnopqrstuvwxyz"}).shown()
    assert shown["token"] == {"value": "abcd…wxyz", "from": "SCNS_TOKEN"}
