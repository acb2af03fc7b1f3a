#!/usr/bin/env bash
# Lint, types and tests, as a reviewer would run them. Expects the venv from the README.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=.venv/bin
"$bin/ruff" check .
"$bin/ruff" format --check .
"$bin/mypy"
"$bin/pytest" -n auto "$@"
