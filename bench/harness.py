"""What every benchmark needs: a fresh PostgreSQL database with the national data
set, the project served by gunicorn on loopback, timing statistics and the
machine's description. Benchmarks are run by hand, never by the test suite."""

import atexit
import datetime
import http.client
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
PG = "postgres://postgres@127.0.0.1:5432"
DATA_DIR = REPO / "var" / "bench"
# Seeded heartbeats are "now" once; a benchmark must not depend on finishing
# within the 5-minute staleness window, so the server is told they stay fresh.
STALE_SECONDS = "86400"

_server: subprocess.Popen[bytes] | None = None
_worker: subprocess.Popen[bytes] | None = None


def data_dir(database: str) -> Path:
    """Each benchmark's own folder (its API keys), so that two can run at once."""
    folder = DATA_DIR / database
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def environment(database: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": f"{PG}/{database}",
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"),  # not the tests' (15)
        "DATA_DIR": str(data_dir(database)),
        "POOL_HEARTBEAT_STALE_SECONDS": STALE_SECONDS,
        "LOG_LEVEL": "WARNING",
    }


def machine(database_url: str) -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    meminfo = Path("/proc/meminfo").read_text().split()
    ram_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024 / 1024
    with psycopg.connect(database_url) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return {
        "CPU": cpu,
        "Cores": str(os.cpu_count()),
        "RAM": f"{ram_gib:.1f} GiB",
        "PostgreSQL": row[0] if row else "?",
        "Python": platform.python_version(),
        "Date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def print_machine(database_url: str) -> None:
    print("==> machine")
    for name, value in machine(database_url).items():
        print(f"  {name}: {value}")


def recreate_database(name: str, *, template: str = "template1") -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


def database_exists(name: str) -> bool:
    with psycopg.connect(f"{PG}/postgres") as connection:
        return connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode:
        sys.exit(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def national_database(env: dict[str, str], *, database: str, seed: int = 42, scale: float = 1.0) -> dict[str, str]:
    """Recreate ``database``, migrate it, seed the national data set; returns the API keys by kind."""
    print(f"==> database {database}: recreate, migrate, seed_national --seed {seed} --scale {scale}", flush=True)
    recreate_database(database)
    manage(env, "migrate", "-v0")
    started = time.monotonic()
    manage(env, "seed_national", "--seed", str(seed), "--scale", str(scale))
    print(f"  seeded in {time.monotonic() - started:.1f} s")
    # Production tables have planner statistics; a freshly loaded one has none until autovacuum.
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
    lines = (data_dir(database) / "national-keys.txt").read_text().splitlines()
    return {kind: key for kind, _, key in (line.split() for line in lines)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(
    port: int,
    method: str,
    path: str,
    *,
    key: str | None = None,
    body: bytes | None = None,
    content_type: str = "",
    cookie: str = "",
) -> tuple[int, bytes, float]:
    """One request on a fresh connection (gunicorn's sync workers close each one): status, body, ms.
    ``key`` authenticates to the API; ``cookie`` carries a signed-in session to the dashboards."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if cookie:
        headers["Cookie"] = cookie
    if content_type:
        headers["Content-Type"] = content_type
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    return response.status, answer, (time.perf_counter() - started) * 1000


def start_server(env: dict[str, str], port: int, *, workers: int = 1) -> None:
    """gunicorn in its own process group, stopped at exit or on a signal."""
    global _server
    atexit.register(stop_server)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    log = Path(env["DATA_DIR"]) / "gunicorn.log"
    command = [
        sys.executable, "-m", "gunicorn", "config.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--log-level", "warning", "--timeout", "120",
    ]  # fmt: skip
    with log.open("wb") as log_file:
        _server = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _server.poll() is not None:
            sys.exit(f"gunicorn exited with {_server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if request(port, "GET", "/bare/")[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"gunicorn did not answer within 60 s:\n{log.read_text()[-3000:]}")


def stop_server() -> None:
    """Stop the gunicorn we started (master and workers)."""
    global _server
    if _server is None or _server.poll() is not None:
        _server = None
        return
    os.killpg(_server.pid, signal.SIGTERM)
    try:
        _server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(_server.pid, signal.SIGKILL)
        _server.wait()
    _server = None


def start_worker(env: dict[str, str], *, concurrency: int = 1) -> None:
    """A Celery worker on every queue, in its own process group, its queues purged first; stopped at exit."""
    global _worker
    atexit.register(stop_worker)
    celery = [sys.executable, "-m", "celery", "-A", "config"]
    subprocess.run([*celery, "purge", "-f", "-Q", "ingest,settle,payments,default"], cwd=REPO, env=env, check=True,
                   capture_output=True)  # fmt: skip
    log = Path(env["DATA_DIR"]) / "worker.log"
    command = [*celery, "worker", "-Q", "ingest,settle,payments,default", "--concurrency", str(concurrency),
               "--without-gossip", "--without-mingle", "--loglevel", "WARNING"]  # fmt: skip
    with log.open("wb") as log_file:
        _worker = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_worker() -> None:
    global _worker
    if _worker is None or _worker.poll() is not None:
        _worker = None
        return
    os.killpg(_worker.pid, signal.SIGTERM)
    try:
        _worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(_worker.pid, signal.SIGKILL)
        _worker.wait()
    _worker = None


def _on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def percentile(values: list[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def stats(values: list[float]) -> dict[str, float]:
    return {"median": percentile(values, 50), "p95": percentile(values, 95), "p99": percentile(values, 99)}


def verdict(checks: list[tuple[str, bool]], errors: Sequence[str] = ()) -> int:
    """Print PASS/FAIL for each check and the first errors; the process's exit code."""
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    for error in errors[:10]:
        print(f"  {error}")
    return 0 if all(ok for _, ok in checks) else 1
