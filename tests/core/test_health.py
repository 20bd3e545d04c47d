import pytest
from celery import current_app
from django.test import Client

from core.tasks import ping


@pytest.mark.django_db
def test_healthz_answers_without_a_key() -> None:
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_database_and_broker() -> None:
    response = Client().get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}


@pytest.mark.django_db
def test_readyz_is_503_when_the_broker_does_not_answer() -> None:
    original = current_app.conf.broker_url
    current_app.conf.broker_url = "redis://127.0.0.1:1/0"
    try:
        response = Client().get("/readyz")
    finally:
        current_app.conf.broker_url = original

    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("error")
    assert response.json()["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_the_openapi_schema_and_swagger_ui_are_served() -> None:
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    docs = Client().get("/api/docs/")

    assert schema.status_code == 200
    assert "/api/v1/api-keys/" in schema.json()["paths"]
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content


@pytest.mark.celery_worker
def test_a_task_runs_on_a_real_worker_over_redis(celery_worker_process) -> None:
    assert current_app.conf.broker_url.startswith("redis://")

    answer = ping.delay().get(timeout=60)

    assert answer["pong"] == "ok"
    assert answer["database"] == "ok"
    assert answer["pid"] == celery_worker_process.pid  # ran in the worker process, not in this one
