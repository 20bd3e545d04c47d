"""The OpenAPI schema documents the error answers and their stable codes (core.schema)."""

from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema(django_db_blocker: Any) -> dict[str, Any]:
    with django_db_blocker.unblock():
        response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return dict(response.json())


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def test_every_operation_documents_a_500_server_error_with_its_request_id(schema) -> None:
    for path, method, operation in operations(schema):
        answer = operation["responses"]["500"]
        assert "`server_error`" in answer["description"], (path, method)
        assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "request_id" in schema["components"]["schemas"]["Error"]["properties"]["error"]["properties"]


def test_the_stable_codes_every_operation_may_answer_are_documented(schema) -> None:
    _, _, operation = operations(schema)[0]

    assert "`not_found`" in operation["responses"]["404"]["description"]
    assert "`invalid_choice` names the valid values" in operation["responses"]["400"]["description"]
    assert "x-error-codes" not in str(schema)


def test_paying_an_invoice_documents_no_payment_method(schema) -> None:
    pay = schema["paths"]["/api/v1/invoices/{invoice_id}/pay/"]["post"]

    assert "`no_payment_method`" in pay["responses"]["409"]["description"]
    assert "`invoice_not_payable`" in pay["responses"]["409"]["description"]


def test_an_order_documents_the_chosen_pool_and_its_refusals(schema) -> None:
    order = schema["paths"]["/api/v1/orders/"]["post"]
    body = schema["components"]["schemas"]["OrderRequestRequest"]
    placed = schema["components"]["schemas"]["Order"]

    assert body["properties"]["pool"]["format"] == "uuid"
    assert body["properties"]["pool"]["nullable"] is True
    assert "pool" not in body.get("required", [])
    assert "GET /api/v1/offers/" in body["properties"]["pool"]["description"]
    assert "pool" in placed["properties"]
    for code in ("no_capacity", "pool_rejected", "pool_not_offered"):
        assert f"`{code}`" in order["responses"]["422"]["description"]
