#!/usr/bin/env bash
# The project's checks: lint, format, types, migrations, then the test suite on
# PostgreSQL and Redis (DATABASE_URL and REDIS_URL, defaults in config/settings/test.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export DJANGO_SETTINGS_MODULE=config.settings.test

echo "==> ruff"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
echo "==> mypy"
"$PY" -m mypy .
echo "==> migrations are up to date"
"$PY" manage.py makemigrations --check --dry-run
echo "==> pytest"
"$PY" -m pytest "$@"
