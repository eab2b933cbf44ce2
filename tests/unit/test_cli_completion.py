"""scns completion: scripts generated from the parser complete its subcommands and options."""

import shutil
import subprocess

import pytest

from scns_cli.__main__ import build_parser
from scns_cli.completion import bash_script, describe, zsh_script

COMMANDS = ["submit", "queue", "show", "cancel", "nodes", "history", "logs", "events", "config", "completion"]


def test_every_subcommand_and_option_is_in_both_scripts():
    _, commands = describe(build_parser())
    assert [command.name for command in commands] == COMMANDS
    bash, zsh = bash_script(build_parser()), zsh_script(build_parser())
    for command in commands:
        assert command.name in bash and command.name in zsh
        assert any(flag == "--json" for option in command.options for flag in option.flags)
        for option in command.options:
            for flag in option.flags:
                assert flag in bash and flag in zsh


def complete(words: list[str]) -> list[str]:
    script = bash_script(build_parser())
    line = " ".join(f"'{word}'" for word in words)
    program = f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _scns_complete; printf "%s\\n" "${{COMPREPLY[@]}}"'
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return result.stdout.split()


@pytest.mark.skipif(not shutil.which("bash"), reason="no bash")
def test_bash_completes_commands_options_and_choices():
    assert complete(["scns", "qu"]) == ["queue"]
    assert "--watch" in complete(["scns", "queue", "--w"])
    assert complete(["scns", "completion", ""]) == ["bash", "zsh"]
    assert sorted(complete(["scns", "config", "s"])) == ["set", "show"]
    assert "--parsable" in complete(["scns", "submit", "--pa"])


@pytest.mark.skipif(not shutil.which("zsh"), reason="no zsh")
def test_the_zsh_script_parses():
    subprocess.run(["zsh", "-n", "-c", zsh_script(build_parser())], check=True)
