"""scns submit: directives, options and --export made into a submit request (pure)."""

import pytest

from scns_cli.errors import CliError
from scns_cli.script import (
    DEFAULT_OUTPUT,
    OPTION_KEYS,
    build_submission,
    directive_lines,
    export_environment,
    read_directives,
    wrap_script,
)

SCRIPT = """#!/bin/bash
# a comment
#SBATCH --job-name=sim -A project_beta
#SBATCH -p gpu --time=1:30:00   # an end-of-line comment
#SBATCH -c 4 --ntasks-per-node=2 --mem=4GB --exclusive
#SBATCH -o out-%x-%j.txt -e err-%j.txt
#SBATCH --mail-user=someone@example.org --array=1-10
#SCNS -p default

#SBATCH --chdir=/ignored/after/blank/is/still/header
echo start
#SBATCH --job-name=too-late
"""


def options(**given):
    return {key: given.get(key) for key in OPTION_KEYS}


def submission(script=SCRIPT, environ=None, cwd="/jobs/here", **given):
    return build_submission(script, "sim.sh", options(**given), cwd=cwd, environ=environ or {},
                            default_name="sim.sh", default_account="fallback", default_partition="default")


def test_directives_stop_at_the_first_command_and_skip_comments_and_blank_lines():
    lines = directive_lines(SCRIPT)
    assert [number for number, _, _ in lines] == [3, 4, 5, 6, 7, 8, 10]
    assert all(prefix in ("#SBATCH", "#SCNS") for _, prefix, _ in lines)
    assert directive_lines("#SBATCHX --job-name=x\n#SBATCH\techo\n")[0][0] == 2  # #SBATCHX is no directive


def test_directives_give_the_spec_and_scns_ones_win_over_sbatch_ones():
    job = submission().body["job"]
    assert job["name"] == "sim" and job["account"] == "project_beta"
    assert job["partition"] == "default"  # #SCNS after #SBATCH -p gpu
    assert job["time_limit"] == "1:30:00"
    assert (job["cpus_per_task"], job["ntasks_per_node"], job["memory_per_node"], job["exclusive"]) == (4, 2, "4G", True)
    assert job["standard_output"] == "out-sim-%j.txt" and job["standard_error"] == "err-%j.txt"
    assert job["current_working_directory"] == "/ignored/after/blank/is/still/header"
    assert submission().body["script"] == SCRIPT


def test_unsupported_directives_are_warnings_naming_the_line():
    warnings = submission().warnings
    assert len(warnings) == 1
    assert warnings[0].startswith("sim.sh:7: #SBATCH --mail-user=someone@example.org --array=1-10")
    assert "not supported" in warnings[0]


def test_command_line_options_win_over_directives():
    job = submission(name="cli", account="acct", partition="p2", time="10", cpus_per_task=1, chdir="rel",
                     output="o.txt", error="e.txt").body["job"]
    assert (job["name"], job["account"], job["partition"], job["time_limit"], job["cpus_per_task"]) == \
        ("cli", "acct", "p2", "10", 1)
    assert job["current_working_directory"] == "/jobs/here/rel"
    assert (job["standard_output"], job["standard_error"]) == ("o.txt", "e.txt")


def test_defaults_are_sbatch_ones():
    job = submission("#!/bin/sh\necho hi\n").body["job"]
    assert job["name"] == "sim.sh" and job["account"] == "fallback" and job["partition"] == "default"
    assert job["current_working_directory"] == "/jobs/here"
    assert job["standard_output"] == job["standard_error"] == DEFAULT_OUTPUT == "slurm-%j.out"
    assert job["time_limit"] == "UNLIMITED"
    assert "cpus_per_task" not in job and "memory_per_node" not in job and "exclusive" not in job


def test_ntasks_is_tasks_per_node_and_more_nodes_is_a_warning():
    result = submission("#!/bin/sh\n#SBATCH -N 2 -n 3\necho\n")
    assert result.body["job"]["ntasks_per_node"] == 3
    assert any("--nodes=2" in warning for warning in result.warnings)
    assert not submission("#!/bin/sh\n#SBATCH --nodes=1\necho\n").warnings


@pytest.mark.parametrize("script, message", [
    ("#!/bin/sh\n#SBATCH -c zero\necho\n", "sim.sh:2"),
    ("#!/bin/sh\n#SBATCH --time=99:99\necho\n", "--time"),
    ("#!/bin/sh\n#SBATCH --mem=lots\necho\n", "--mem"),
    ("#!/bin/sh\n#SBATCH -J 'unclosed\necho\n", "sim.sh:2"),
    ("   \n", "empty"),
])
def test_bad_values_are_one_clear_error(script, message):
    with pytest.raises(CliError, match=message):
        submission(script)


def test_no_account_anywhere_is_an_error():
    with pytest.raises(CliError, match="no account"):
        build_submission("#!/bin/sh\necho\n", "x", options(), cwd="/", environ={}, default_name="x",
                         default_account=None, default_partition="default")


def test_wrap_is_a_sh_script():
    assert wrap_script("echo hi") == "#!/bin/sh\necho hi\n"
    assert read_directives(wrap_script("echo hi")).options == {}


ENV = {"PATH": "/usr/bin", "HOME": "/home/me", "USER": "me", "SCNS_TOKEN": "secret", "SLURM_JOB_ID": "9",
       "OMP_NUM_THREADS": "4", "BASH_FUNC_f%%": "() { :; }", "PWD": "/x"}


def test_export_all_sends_the_shell_but_its_session_and_secrets():
    environment, warnings = export_environment(None, ENV)
    assert environment == {"PATH": "/usr/bin", "OMP_NUM_THREADS": "4"}
    assert export_environment("ALL", ENV)[0] == environment and not warnings


def test_export_none_and_lists():
    assert export_environment("NONE", ENV) == ({}, [])
    assert export_environment("OMP_NUM_THREADS,X=1", ENV) == ({"OMP_NUM_THREADS": "4", "X": "1"}, [])
    assert export_environment("NONE,X=a=b", ENV)[0] == {"X": "a=b"}
    assert export_environment("ALL,X=1", ENV)[0] == {"PATH": "/usr/bin", "OMP_NUM_THREADS": "4", "X": "1"}
    assert export_environment("HOME", ENV)[0] == {"HOME": "/home/me"}  # named explicitly: sent
    environment, warnings = export_environment("UNSET_HERE", ENV)
    assert environment == {} and "UNSET_HERE" in warnings[0]
    with pytest.raises(CliError, match="not a variable name"):
        export_environment("1BAD=x", ENV)


def test_export_beyond_the_servers_limits_is_an_error():
    with pytest.raises(CliError, match="at most 256"):
        export_environment("ALL", {f"V{i}": "x" for i in range(300)})
    with pytest.raises(CliError, match="128 KiB"):
        export_environment("ALL", {f"V{i}": "x" * 2000 for i in range(100)})
