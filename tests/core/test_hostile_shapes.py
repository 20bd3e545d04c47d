"""The hostile shapes of issue 16, each a 400 with its code at the shared layer that refuses it
(``core.parsers``, ``core.serializers``, ``core.filters``); never a 500, and nothing stored.
tests/reliability/test_hostile_inputs.py sends such values to every route and parameter."""

from typing import Any

import pytest

from organizations.models import ApiKey
from pools.models import ResourcePool

pytestmark = pytest.mark.django_db


def _error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def _field_codes(response: Any, name: str) -> set[str]:
    return {error["code"] for error in response.json()["error"]["fields"][name]}


@pytest.mark.parametrize("depth", [33, 1000, 5000])
def test_json_nested_deeper_than_32_levels_is_a_400_json_too_deep(buyer_client, depth: int) -> None:
    body = b'{"name": ' + b"[" * depth + b"]" * depth + b"}"

    response = buyer_client.generic("POST", "/api/v1/api-keys/", body, content_type="application/json")

    assert _error(response) == (400, "json_too_deep")
    assert ApiKey.objects.count() == 1  # the test's own key


def test_json_32_levels_deep_is_read(buyer_client) -> None:
    body = b'{"name": "k", "role": ' + b"[" * 31 + b"]" * 31 + b"}"

    response = buyer_client.generic("POST", "/api/v1/api-keys/", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["role"][0]["code"] == "invalid_type"  # read, then refused


@pytest.mark.parametrize(
    "body",
    [b'{"name": "\\ud800"}', b'{"name": "a\\udfffb"}', b'{"\\ud800": 1}', b'{"name": "\xff"}'],
    ids=["lone-high", "lone-low", "in-a-key", "not-utf8"],
)
def test_a_lone_surrogate_or_bytes_that_are_not_utf8_are_a_400_invalid_text(buyer_client, body: bytes) -> None:
    response = buyer_client.generic("POST", "/api/v1/api-keys/", body, content_type="application/json")

    assert _error(response) == (400, "invalid_text")


def test_a_token_price_for_a_model_named_with_a_lone_surrogate_is_a_400(make_client, provider) -> None:
    body = (
        b'{"name": "p", "hub": "ningxia", "province": "Ningxia", "gpu_model": "H100-80G", "cards": 8, "pue": "1.2",'
        b' "green_share": "0.5", "price_per_card_hour": "10.0000",'
        b' "token_prices": {"\\ud800": {"input": "1.0", "output": "2.0"}}}'
    )

    response = make_client(provider).generic("POST", "/api/v1/pools/", body, content_type="application/json")

    assert _error(response) == (400, "invalid_text")
    assert not ResourcePool.objects.exists()


@pytest.mark.parametrize(
    ("query", "field", "code"),
    [
        ("max_price=1e-999999", "max_price", "max_digits"),
        ("max_price=1e999999", "max_price", "max_digits"),
        ("max_price=-1e-999999", "max_price", "max_digits"),
        ("min_green_share=1e-10001", "min_green_share", "max_digits"),
        ("max_price=0.00000000001", "max_price", "max_decimal_places"),
    ],
)
def test_a_decimal_filter_with_an_extreme_exponent_is_a_400(buyer_client, query: str, field: str, code: str) -> None:
    response = buyer_client.get(f"/api/v1/offers/?{query}")

    assert _error(response) == (400, "validation_error")
    assert code in _field_codes(response, field)


@pytest.mark.parametrize(
    ("query", "field", "code"),
    [
        ("to=0001-01-01T00:00:00Z", "to", "datetime_out_of_range"),
        ("from=0001-01-01T00:00:00Z&to=0001-01-02T00:00:00Z", "from", "datetime_out_of_range"),
        ("from=9999-12-31T00:00:00Z&to=9999-12-31T23:59:59Z", "from", "datetime_out_of_range"),
        ("to=9999-12-31T23:59:59-01:00", "to", "overflow"),
        ("to=0001-01-01T00:00:00%2B01:00", "to", "overflow"),
        ("to=9000-01-01T00:00:00Z", "to", "datetime_out_of_range"),
    ],
)
def test_a_date_time_at_the_edges_of_the_calendar_is_a_400(buyer_client, query: str, field: str, code: str) -> None:
    response = buyer_client.get(f"/api/v1/usage/?{query}")

    assert _error(response) == (400, "validation_error")
    assert code in _field_codes(response, field)


@pytest.mark.parametrize(
    "value",
    ["0001-01-01T00:00:00%2B01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z"],
)
def test_a_date_time_filter_at_the_edges_of_the_calendar_is_a_400(make_client, operator, value: str) -> None:
    response = make_client(operator).get(f"/api/v1/audit-events/?occurred_after={value}")

    assert _error(response) == (400, "validation_error")
    assert _field_codes(response, "occurred_after") == {"datetime_out_of_range"}


@pytest.mark.parametrize("field", ["earliest_start", "deadline"])
def test_a_quote_window_in_year_1_or_9999_is_a_400(buyer_client, field: str) -> None:
    body = {"cards": 1, "workload": "training", "duration_hours": "2", field: "0001-01-01T00:00:00Z"}
    late = {**body, field: "9999-12-31T23:59:59Z"}

    answers = [buyer_client.post("/api/v1/quotes/", each, format="json") for each in (body, late)]

    assert [answer.status_code for answer in answers] == [400, 400]
    assert [_field_codes(answer, field) for answer in answers] == [{"datetime_out_of_range"}] * 2
