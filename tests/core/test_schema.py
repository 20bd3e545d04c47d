"""The OpenAPI schema documents the error answers and their stable codes (core.schema)."""

import json
import re
from typing import Any

import pytest
from django.test import Client
from drf_spectacular.generators import EndpointEnumerator

from core.idempotency import HONOURS_HEADER

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


def _handlers_honouring_idempotency() -> set[tuple[str, str]]:
    """(path, method) of every route whose handler is wrapped by core.idempotency.idempotent."""
    found = set()
    for path, _, _, callback in EndpointEnumerator().get_api_endpoints():
        view = getattr(callback, "cls", None)
        for method in ("post", "put", "patch", "delete"):
            if getattr(getattr(view, method, None), HONOURS_HEADER, False):
                found.add((path.replace("<", "{").replace(">", "}"), method))
    return found


def _declares_idempotency_key(operation: dict[str, Any]) -> bool:
    return any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in operation.get("parameters", []))


def test_idempotency_key_is_declared_on_exactly_the_operations_that_honour_it(schema) -> None:
    honoured = _handlers_honouring_idempotency()
    declared = {
        (path, method) for path, method, operation in operations(schema) if _declares_idempotency_key(operation)
    }

    assert declared == {(path, method) for path, method in honoured if path in schema["paths"]} == honoured
    header = next(
        p for _, _, op in operations(schema) for p in op.get("parameters", []) if p["name"] == "Idempotency-Key"
    )
    assert (header.get("required", False), header["schema"]["maxLength"]) == (False, 255)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/orders/",
        "/api/v1/bank/top-ups/",
        "/api/v1/invoices/{invoice_id}/pay/",
        "/api/v1/invoices/{invoice_id}/bank-transfer/",
        "/api/v1/voucher-programs/",
        "/api/v1/voucher-programs/{program_id}/vouchers/",
    ],
)
def test_every_money_moving_write_declares_idempotency_key(schema, path: str) -> None:
    assert _declares_idempotency_key(schema["paths"][path]["post"])


def _body(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(schema["components"]["schemas"][name]["properties"])


def _parameter(schema: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    return next(p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == name)


def _accepts(prop: dict[str, Any], value: str) -> bool:
    return re.fullmatch(prop["pattern"], value) is not None


def test_the_limits_the_server_enforces_are_in_the_schema(schema) -> None:
    order = _body(schema, "OrderRequestRequest")
    bank = _body(schema, "PatchedBankSettingsRequest")
    offers = "/api/v1/offers/"

    assert _parameter(schema, offers, "min_free_cards")["schema"] == {"type": "integer", "minimum": 1}
    assert _parameter(schema, offers, "min_green_share")["schema"] == {"type": "number", "minimum": 0, "maximum": 1}
    assert _parameter(schema, offers, "max_price")["schema"]["minimum"] == 0
    assert (order["cards"]["minimum"], order["max_latency_ms"]["maximum"]) == (1, 1000)
    assert [_accepts(order["duration_hours"], v) for v in ("0.01", "8", "0", "0.00", "-1")] == [1, 1, 0, 0, 0]
    assert "From 0.01 to 8784." in order["duration_hours"]["description"]
    assert not _accepts(order["max_price"], "-1") and not _accepts(order["max_price"], "0")
    assert "From 0 to 1." in order["min_green_share"]["description"]
    assert not any(_accepts(bank[name], "-5.00") for name in bank)
    assert "`auto_top_up_incomplete`" in schema["components"]["schemas"]["PatchedBankSettingsRequest"]["description"]
    assert "`window_too_short`" in schema["components"]["schemas"]["OrderRequestRequest"]["description"]


def test_no_request_decimal_with_a_minimum_of_zero_or_more_admits_a_minus_sign(schema) -> None:
    for name, component in schema["components"]["schemas"].items():
        for field, prop in component.get("properties", {}).items():
            said = prop.get("description", "")
            floor = re.search(r"(?:From|At least) (\d[\d.]*)", said)
            if prop.get("format") == "decimal" and floor and "pattern" in prop:
                assert not _accepts(prop, "-1"), (name, field)


def test_state_fields_are_enums_and_references_are_typed(schema) -> None:
    components = schema["components"]["schemas"]

    for component, field in [("Invoice", "status"), ("Lease", "status"), ("Order", "status"), ("TopUp", "status"),
                             ("Bank", "mode"), ("BankMovement", "reason"), ("InvoiceLine", "metric")]:  # fmt: skip
        prop = components[component]["properties"][field]
        reference = prop.get("$ref") or prop["allOf"][0]["$ref"]
        assert components[reference.rsplit("/", 1)[1]]["enum"], (component, field)
    assert components["Order"]["properties"]["lease"]["format"] == "uuid"
    assert {"$ref": "#/components/schemas/NullEnum"} in components["Order"]["properties"]["user_region"]["oneOf"]


def test_nullable_references_say_null_in_a_way_openapi_3_0_validators_accept(schema) -> None:
    window = schema["components"]["schemas"]["Offer"]["properties"]["next_cheaper_window"]

    assert window["oneOf"] == [{"$ref": "#/components/schemas/PriceWindow"}, {"enum": [None]}]
    assert '"allOf": [{"$ref": "#/components/schemas/PriceWindow"}], "nullable"' not in json.dumps(schema)


def test_the_error_body_types_its_fields_and_the_reasons_of_no_capacity(schema) -> None:
    error = schema["components"]["schemas"]["Error"]["properties"]["error"]["properties"]

    assert error["fields"]["additionalProperties"]["oneOf"][0]["items"] == {"$ref": "#/components/schemas/FieldError"}
    assert error["reasons"]["items"]["required"] == ["reason", "message", "pools"]
    assert schema["components"]["schemas"]["FieldError"]["required"] == ["code", "message"]


def test_a_usage_report_is_typed_per_event_type_with_binary_mode_headers(schema) -> None:
    report = schema["paths"]["/api/v1/usage-events/"]["post"]
    components = schema["components"]["schemas"]
    body = report["requestBody"]["content"]["application/json"]["schema"]
    choices = components[body["$ref"].rsplit("/", 1)[1]]["oneOf"]

    assert {"$ref": "#/components/schemas/UsageEvent"} in choices
    assert {
        "type": "array",
        "minItems": 1,
        "maxItems": 10_000,
        "items": {"$ref": "#/components/schemas/UsageEvent"},
    } in choices
    assert components["UsageEvent"]["discriminator"]["propertyName"] == "type"
    assert components["GpuSecondsData"]["properties"]["quantity"]["minimum"] == 0
    assert components["TokensData"]["required"] == ["model", "input_tokens", "output_tokens"]
    assert {p["name"] for p in report["parameters"]} >= {
        "ce-id",
        "ce-source",
        "ce-specversion",
        "ce-type",
        "ce-subject",
        "ce-time",
    }
