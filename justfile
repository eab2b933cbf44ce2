set shell := ["bash", "-euc"]

venv := justfile_directory() / ".venv"
python := venv / "bin" / "python"

# List the recipes.
default:
    @just --list

# Create or update .venv with the project and its development tools (skipped when up to date).
install:
    #!/usr/bin/env bash
    set -euo pipefail
    [ -x "{{python}}" ] || python3 -m venv "{{venv}}"
    stamp="{{venv}}/.scns-installed"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "{{python}}" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
        touch "$stamp"
    fi

# Bring up the whole stack on embedded defaults (NATS, PostgreSQL, four services) in the foreground.
up *ARGS: install
    "{{python}}" -m shared.stack up {{ARGS}}

# Run the whole test suite: unit, integration and end-to-end against servers the harness starts.
test *ARGS: install
    "{{python}}" -m pytest {{ARGS}}

# Run the benchmarks against a stack they start and stop; prints the numbers.
bench *ARGS: install
    "{{python}}" bench/run.py {{ARGS}}

# Create, revoke or list API tokens of the running stack: ./just token create NAME --account A [--role user|admin]
token *ARGS: install
    SCNS_ADMIN_TOKEN="${SCNS_ADMIN_TOKEN:-$(cat .scns/admin-token)}" NATS_CREDENTIALS="${NATS_CREDENTIALS:-.scns/nats-credentials/admin.json}" \
        "{{python}}" -m services.gateway.tokens {{ARGS}}

# Rebuild the read model of the running stack from the event log, and compare it with the live one.
rebuild: install
    NATS_CREDENTIALS="${NATS_CREDENTIALS:-.scns/nats-credentials/admin.json}" "{{python}}" -m services.projector.rebuild
