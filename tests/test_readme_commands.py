"""The README's first command serves the API, with docs, on the embedded PostgreSQL and broker."""

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, _free_port


def _get(url: str, key: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def _signed_in(base: str, username: str, password: str) -> urllib.request.OpenerDirector:
    """A browser-like opener with the session of ``username``, signed in through the login form."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = opener.open(f"{base}/dashboard/login/", timeout=30).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token, form[:500]
    body = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token[1]})
    answer = opener.open(f"{base}/dashboard/login/", data=body.encode(), timeout=30)
    assert answer.url != f"{base}/dashboard/login/", "the demo login was refused"
    return opener


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
    assert (data_dir / "postgres" / "PG_VERSION").read_text().strip() == "18"
    keys = dict(line.split()[:3:2] for line in (data_dir / "demo-keys.txt").read_text().splitlines())
    me = json.loads(_get(f"{base}/api/v1/organizations/me/", keys["buyer"])[1])
    assert me["kind"] == "buyer"
    assert json.loads(_get(f"{base}/api/v1/hubs/")[1])["count"] == 8
    offers = json.loads(_get(f"{base}/api/v1/offers/?ordering=price", keys["buyer"])[1])
    assert offers["count"] > 0, "the demo's national pools are in the market"
    logins = {line.split()[0]: line.split()[4:6] for line in (data_dir / "demo-keys.txt").read_text().splitlines()}
    for kind, (username, password) in logins.items():
        page = _signed_in(base, username, password).open(f"{base}/dashboard/", timeout=30)
        assert page.status == 200 and page.url.endswith(f"/dashboard/{username}/"), kind
        assert f'data-organization="{username}"'.encode() in page.read(), kind
    assert _get(f"{base}/static/dashboards/vendor/chartjs/chart.umd.min.js")[0] == 200

    # A task goes through the filesystem broker to the demo's own worker process.
    code = "import django; django.setup(); from core.tasks import ping; print(ping.delay().get(timeout=60)['pong'])"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**env, "DJANGO_SETTINGS_MODULE": "config.settings.dev"},
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.stdout.strip() == "ok", result.stderr
