"""The README's first command serves the API, with docs, on SQLite and the embedded broker."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, key: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


@pytest.fixture
def demo(tmp_path: Path):  # type: ignore[no-untyped-def]
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env.update({"DATA_DIR": str(tmp_path), "PORT": str(port), "PYTHON": sys.executable})
    log = (tmp_path / "demo.log").open("wb")
    process = subprocess.Popen(
        [str(REPO / "scripts" / "demo.sh")], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            try:
                if _get(f"{base}/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        yield base, tmp_path, env
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_demo_serves_api_docs_and_demo_keys_and_runs_tasks_without_servers(demo) -> None:  # type: ignore[no-untyped-def]
    base, data_dir, env = demo

    assert _get(f"{base}/api/docs/")[0] == 200
    assert json.loads(_get(f"{base}/readyz")[1])["checks"] == {"database": "ok", "broker": "ok"}
    assert (data_dir / "db.sqlite3").exists()
    keys = dict(line.split()[:3:2] for line in (data_dir / "demo-keys.txt").read_text().splitlines())
    me = json.loads(_get(f"{base}/api/v1/organizations/me/", keys["buyer"])[1])
    assert me["kind"] == "buyer"
    assert json.loads(_get(f"{base}/api/v1/hubs/")[1])["count"] == 8
    offers = json.loads(_get(f"{base}/api/v1/offers/?ordering=price", keys["buyer"])[1])
    assert offers["count"] > 0, "the demo's national pools are in the market"

    # A task goes through the filesystem broker to the demo's own worker process.
    code = "import django; django.setup(); from core.tasks import ping; print(ping.delay().get(timeout=60)['pong'])"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**env, "DJANGO_SETTINGS_MODULE": "config.settings.dev"},
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.stdout.strip() == "ok", result.stderr
