import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import (
    env_bool,
    env_database,
    env_decimal,
    env_int,
    env_networks,
    env_rate,
    env_redis_url,
    env_str,
)
from tests.conftest import REPO


@pytest.mark.parametrize("value", ["maybe", "2", "tru", "yes please"])
def test_env_bool_refuses_a_value_that_is_not_a_boolean(value: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="DEBUG"):
        env_bool("DEBUG", False, environ={"DEBUG": value})


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("TRUE", True), ("off", False), ("", False)])
def test_env_bool_reads_the_usual_spellings(value: str, expected: bool) -> None:
    assert env_bool("DEBUG", not expected, environ={"DEBUG": value}) is expected


def test_env_bool_falls_back_to_the_default_when_unset() -> None:
    assert env_bool("DEBUG", True, environ={}) is True


@pytest.mark.parametrize("value", ["ten", "1.5", "", "0x10"])
def test_env_int_refuses_a_non_integer(value: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="API_PAGE_SIZE"):
        env_int("API_PAGE_SIZE", 50, environ={"API_PAGE_SIZE": value})


def test_env_int_refuses_a_value_outside_its_range() -> None:
    with pytest.raises(ImproperlyConfigured, match="minimum 1"):
        env_int("API_PAGE_SIZE", 50, min_value=1, environ={"API_PAGE_SIZE": "0"})
    with pytest.raises(ImproperlyConfigured, match="maximum 1000"):
        env_int("API_PAGE_SIZE", 50, max_value=1000, environ={"API_PAGE_SIZE": "1001"})


@pytest.mark.parametrize("value", ["NaN", "Infinity", "ten percent", "1.5"])
def test_env_decimal_refuses_non_finite_garbage_or_out_of_range(value: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="PLATFORM_COMMISSION_RATE"):
        env_decimal(
            "PLATFORM_COMMISSION_RATE",
            Decimal("0.1"),
            min_value=Decimal(0),
            max_value=Decimal(1),
            environ={"PLATFORM_COMMISSION_RATE": value},
        )


def test_env_str_without_default_requires_the_variable() -> None:
    with pytest.raises(ImproperlyConfigured, match="Set the environment variable SECRET_KEY"):
        env_str("SECRET_KEY", environ={})


@pytest.mark.parametrize("value", ["mysql://root@localhost/db", "file:///var/db", "postgres://", "not a url", ""])
def test_env_database_refuses_unsupported_or_incomplete_urls(value: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        env_database("DATABASE_URL", environ={"DATABASE_URL": value})


def test_env_database_reads_a_postgres_url() -> None:
    config = env_database("DATABASE_URL", environ={"DATABASE_URL": "postgres://app@db:5433/grid"})
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["HOST"], config["PORT"], config["NAME"], config["USER"]) == ("db", 5433, "grid", "app")


def test_env_redis_url_refuses_another_scheme() -> None:
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL"):
        env_redis_url("REDIS_URL", environ={"REDIS_URL": "http://127.0.0.1:6379"})


def test_env_networks_reads_addresses_and_cidr_blocks() -> None:
    networks = env_networks("TRUSTED_PROXIES", environ={"TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7,2001:db8::/32"})

    assert [str(network) for network in networks] == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]
    assert env_networks("TRUSTED_PROXIES", environ={}) == []


@pytest.mark.parametrize("value", ["10.0.0.0/33", "proxy.internal", "10.0.0.300"])
def test_env_networks_refuses_what_is_not_an_address(value: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="TRUSTED_PROXIES"):
        env_networks("TRUSTED_PROXIES", environ={"TRUSTED_PROXIES": value})


def _start_django(
    env_overrides: dict[str, str], settings_module: str = "config.settings.base"
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DEBUG"}}
    env.update({"DJANGO_SETTINGS_MODULE": settings_module, "SECRET_KEY": "x" * 50, **env_overrides})
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_service_refuses_to_start_with_a_bad_setting() -> None:
    result = _start_django({"DEBUG": "perhaps"})
    assert result.returncode != 0
    assert "DEBUG='perhaps' is not a boolean" in result.stderr


def test_the_service_refuses_to_start_without_a_secret_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.base"
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Set the environment variable SECRET_KEY" in result.stderr


def _dev_process(code: str, data_dir: Path, **env_overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings.dev", "DATA_DIR": str(data_dir), **env_overrides})
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _embedded_server_running(data_dir: Path) -> bool:
    pid_file = data_dir / "postgres" / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except ProcessLookupError:
        return False
    return True


def test_without_database_and_redis_urls_dev_runs_on_an_embedded_postgresql_and_the_filesystem_broker(
    tmp_path: Path,
) -> None:
    code = (
        "from django.conf import settings; from django.db import connection; "
        "cursor = connection.cursor(); cursor.execute('SHOW server_version_num'); "
        "print(connection.display_name, cursor.fetchone()[0][:2], settings.DATABASES['default']['HOST'], "
        "settings.CELERY_BROKER_URL)"
    )

    result = _dev_process(code, tmp_path)

    assert result.returncode == 0, result.stderr
    vendor, major, host, broker = result.stdout.split()
    assert (vendor, major, broker) == ("PostgreSQL", "18", "filesystem://")
    assert host.startswith("/"), "connected over a Unix socket, no TCP port"
    assert not _embedded_server_running(tmp_path), "the server stops with the last process that used it"


def test_the_embedded_database_keeps_its_data_across_restarts(tmp_path: Path) -> None:
    write = "connection.cursor().execute('CREATE TABLE kept (note text); INSERT INTO kept VALUES (%s)', ['hello'])"
    read = "cursor = connection.cursor(); cursor.execute('SELECT note FROM kept'); print(cursor.fetchone()[0])"

    first = _dev_process(f"from django.db import connection; {write}", tmp_path)
    second = _dev_process(f"from django.db import connection; {read}", tmp_path)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "hello"


def test_a_process_killed_outright_does_not_keep_the_embedded_server_running(tmp_path: Path) -> None:
    # given a process that joined the server and was then killed with SIGKILL (no atexit)
    killed = _dev_process(
        "import os, signal; from django.db import connection; connection.ensure_connection(); "
        "os.kill(os.getpid(), signal.SIGKILL)",
        tmp_path,
    )
    assert killed.returncode == -signal.SIGKILL
    assert _embedded_server_running(tmp_path), "its handle kept the server up"

    # when another process comes and goes
    result = _dev_process("from django.db import connection; connection.ensure_connection()", tmp_path)

    # then the server stops with it: the dead process's handle was dropped
    assert result.returncode == 0, result.stderr
    assert not _embedded_server_running(tmp_path)


def test_sigterm_stops_a_process_through_its_cleanup_and_with_it_the_embedded_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings.dev", "DATA_DIR": str(tmp_path)})
    code = "import django, time; django.setup(); from django.db import connection; connection.ensure_connection(); "
    process = subprocess.Popen(
        [sys.executable, "-c", code + "print('up', flush=True); time.sleep(120)"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None and process.stdout.readline().strip() == "up"

    process.send_signal(signal.SIGTERM)

    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert not _embedded_server_running(tmp_path)


def test_with_a_database_url_dev_starts_nothing_embedded(tmp_path: Path) -> None:
    result = _dev_process(
        "from django.conf import settings; print(settings.DATABASES['default']['HOST'])",
        tmp_path,
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/compute_grid",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "127.0.0.1"
    assert not (tmp_path / "postgres").exists()


def test_production_settings_refuse_to_start_without_a_database_url() -> None:
    result = _start_django({"ALLOWED_HOSTS": "grid.example.com"}, "config.settings.production")

    assert result.returncode != 0
    assert "Set DATABASE_URL=postgres://" in result.stderr
    assert "embedded" in result.stderr


_PRODUCTION = {
    "DATABASE_URL": "postgres://app@db:5432/grid",
    "ALLOWED_HOSTS": "grid.example.com",
    "METRICS_TOKEN": "m" * 32,
    "STRIPE_API_KEY": "sk_live_own_account_key",
    "STRIPE_WEBHOOK_SECRET": "whsec_own_account_secret",
}


@pytest.mark.parametrize("name", ["STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET"])
@pytest.mark.parametrize("value", ["public default", "unset", ""])
def test_production_settings_refuse_to_start_with_a_public_or_missing_stripe_secret(name: str, value: str) -> None:
    # given production settings complete but for one Stripe secret: the public default, unset or empty
    from config.settings.base import PUBLIC_STRIPE_DEFAULTS

    env = dict(_PRODUCTION)
    if value == "unset":
        del env[name]
    else:
        env[name] = PUBLIC_STRIPE_DEFAULTS[name] if value == "public default" else value

    result = _start_django(env, "config.settings.production")

    # then the service does not start, and says why in one line
    assert result.returncode != 0
    message = f"ImproperlyConfigured: Set {name} to your Stripe account's own value (the default is public)."
    assert result.stderr.strip().splitlines()[-1].endswith(message), result.stderr


def test_production_settings_start_with_the_accounts_own_stripe_secrets() -> None:
    result = _start_django(_PRODUCTION, "config.settings.production")

    assert result.returncode == 0, result.stderr


def test_production_settings_pass_the_deployment_checks() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG"}}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "SECRET_KEY": "k3y-" + "a9Zq7Lm2Xc5Vb8Nw" * 4,
            "ALLOWED_HOSTS": "grid.example.com",
            "METRICS_TOKEN": "m3tr1cs-" + "a9Zq7Lm2Xc5Vb8Nw" * 2,
            "STRIPE_API_KEY": "sk_live_" + "a9Zq7Lm2Xc5Vb8Nw" * 2,
            "STRIPE_WEBHOOK_SECRET": "whsec_" + "a9Zq7Lm2Xc5Vb8Nw" * 2,
        }
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_env_example_lists_every_variable_the_settings_read() -> None:
    import re

    read = set()
    for path in (REPO / "config" / "settings").glob("*.py"):
        read |= set(re.findall(r'env_\w+\(\s*"([A-Z_]+)"', path.read_text()))
        read |= set(re.findall(r'os\.environ\.setdefault\("([A-Z_]+)"', path.read_text()))
    listed = set(re.findall(r"^([A-Z_]+)=", (REPO / ".env.example").read_text(), flags=re.MULTILINE))

    assert read - listed == set(), "add these to .env.example"


@pytest.mark.parametrize(("value", "expected"), [("600/min", (600, 60)), ("5/s", (5, 1)), ("100/hour", (100, 3600))])
def test_env_rate_reads_requests_per_period(value: str, expected: tuple[int, int]) -> None:
    assert env_rate("RATE", "1/s", environ={"RATE": value}) == expected


@pytest.mark.parametrize("value", ["600", "0/min", "ten/min", "600/fortnight", "-1/s"])
def test_env_rate_refuses_what_is_not_a_rate(value: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="RATE"):
        env_rate("RATE", "1/s", environ={"RATE": value})


def test_a_missing_database_stops_manage_py_with_one_line_saying_what_to_do() -> None:
    env = {**os.environ, "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/compute_grid_never_created"}

    result = subprocess.run(
        [sys.executable, "manage.py", "migrate"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "The database 'compute_grid_never_created' does not exist on the PostgreSQL server at 127.0.0.1: create it "
        "first (createdb -h 127.0.0.1 compute_grid_never_created), or unset DATABASE_URL to use the embedded default."
    ]
