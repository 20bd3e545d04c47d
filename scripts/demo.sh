#!/usr/bin/env bash
# Start Compute Grid with demo data: web, Celery worker and Celery beat, each in
# a process of its own. With no DATABASE_URL and no REDIS_URL this runs on
# SQLite and kombu's filesystem broker under var/, needing no servers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-config.settings.dev}
PORT=${PORT:-8000}

echo "==> migrating the database"
"$PY" manage.py migrate --noinput
echo "==> loading demo data"
"$PY" manage.py seed_demo

echo "==> starting the Celery worker and beat"
"$PY" -m celery -A config worker -Q ingest,settle,payments,default --loglevel INFO &
"$PY" -m celery -A config beat --loglevel INFO &
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT INT TERM

echo "==> serving on http://127.0.0.1:${PORT}/  (API docs: http://127.0.0.1:${PORT}/api/docs/)"
"$PY" manage.py runserver "127.0.0.1:${PORT}" --noreload
