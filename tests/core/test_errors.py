import logging
import uuid
from typing import Any

import pytest
from django.test import Client
from rest_framework.exceptions import ErrorDetail, ValidationError

from core.exception_handler import exception_handler
from tests.vouchers.test_programs_api import valid_program

pytestmark = pytest.mark.django_db


def test_malformed_json_is_a_400_with_the_error_body(buyer_client) -> None:
    response = buyer_client.post("/api/v1/api-keys/", data='{"name": ', content_type="application/json")

    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "malformed_json"
    assert "not valid JSON" in body["error"]["message"]
    assert body["error"]["fields"] == {}


def test_unknown_fields_are_refused_by_name(buyer_client) -> None:
    response = buyer_client.post(
        "/api/v1/api-keys/", {"name": "ci", "organization": "x", "rol": "admin"}, format="json"
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unknown_field"
    assert set(error["fields"]) == {"organization", "rol"}
    assert error["fields"]["rol"][0]["code"] == "unknown_field"


def test_wrong_types_are_a_validation_error_per_field(buyer_client) -> None:
    response = buyer_client.post("/api/v1/api-keys/", {"name": ["a"], "role": 7}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert set(error["fields"]) == {"name", "role"}
    assert error["fields"]["role"][0] == {"code": "invalid_type", "message": "Must be a string."}


def test_a_body_that_is_not_an_object_is_a_400(buyer_client) -> None:
    response = buyer_client.post("/api/v1/api-keys/", data="[1, 2]", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_an_unsupported_media_type_is_a_415(buyer_client) -> None:
    response = buyer_client.post("/api/v1/api-keys/", data="name=x", content_type="text/plain")

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_an_unknown_api_path_is_a_json_404(buyer_client) -> None:
    response = buyer_client.get("/api/v1/no-such-thing/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_wrong_method_is_a_405(buyer_client) -> None:
    response = buyer_client.put("/api/v1/organizations/me/", {}, format="json")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_responses_carry_a_request_id(buyer_client) -> None:
    assert len(buyer_client.get("/api/v1/organizations/me/")["X-Request-ID"]) == 32
    echoed = buyer_client.get("/api/v1/organizations/me/", HTTP_X_REQUEST_ID="agent-42.retry-1")
    assert echoed["X-Request-ID"] == "agent-42.retry-1"


@pytest.mark.parametrize(
    ("body", "field"),
    [({"name": 7}, "name"), ({"name": True}, "name"), ({"name": "ok", "role": ["admin"]}, "role")],
)
def test_a_value_of_another_json_type_is_refused_not_coerced(buyer_client, body, field) -> None:
    response = buyer_client.post("/api/v1/api-keys/", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"][field][0]["code"] == "invalid_type"


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_decimal_string_is_refused_not_taken_for_null(buyer_client, blank: str) -> None:
    response = buyer_client.patch("/api/v1/bank/", {"low_balance_threshold": blank}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["low_balance_threshold"][0]["code"] == "invalid_type"


@pytest.mark.parametrize("query", ["status=", "workload=", "page_size="])
def test_a_query_parameter_given_without_a_value_is_refused(buyer_client, query) -> None:
    response = buyer_client.get(f"/api/v1/orders/?{query}")

    assert response.status_code == 400
    name = query.removesuffix("=")
    assert all(isinstance(error["code"], str) for error in response.json()["error"]["fields"][name])


def test_a_blank_filter_says_its_code(provider, make_client) -> None:
    response = make_client(provider).get("/api/v1/pools/?status=")

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["status"][0]["code"] == "blank"


def test_a_field_error_without_a_code_is_answered_with_one() -> None:
    # given a problem raised without a code (as a Django form's errors may be)
    problem = ValidationError({"when": [ErrorDetail("Not a date.", code=None)], "rows": [{"x": ["Bad."]}]})

    # when the one error handler answers it
    body = exception_handler(problem, {}).data["error"]

    # then every problem, nested ones too, carries a string code
    assert body["fields"]["when"] == [{"code": "invalid", "message": "Not a date."}]
    assert body["fields"]["rows"]["0"]["x"][0]["code"] == "invalid"


def test_filtering_by_an_unknown_id_finds_nothing_rather_than_failing(buyer_client) -> None:
    response = buyer_client.get(f"/api/v1/leases/?pool={uuid.uuid4()}")

    assert response.status_code == 200
    assert response.json()["results"] == []


@pytest.mark.parametrize("query", ["staus=placed", "page=1&x=1", "=false"])
def test_a_list_refuses_a_query_parameter_it_does_not_know(buyer_client, query) -> None:
    response = buyer_client.get(f"/api/v1/orders/?{query}")

    assert response.status_code == 400
    (errors,) = response.json()["error"]["fields"].values()
    assert errors[0]["message"].startswith("Unknown query parameter. Known: page, page_size, status, workload")


# --- errors Django answers itself: the JSON body under /api/, DEBUG on or off ----------


@pytest.fixture(params=[True, False], ids=["debug", "no-debug"])
def debug(request: pytest.FixtureRequest, settings: Any) -> bool:
    settings.DEBUG = request.param
    return bool(request.param)


@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_an_unknown_api_path_is_a_json_404_with_debug_on_or_off(debug, method) -> None:
    response = getattr(Client(), method)("/api/v1/no-such-thing/")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert "/api/v1/no-such-thing/" in error["message"]
    assert error["fields"] == {}


def test_a_path_under_api_outside_v1_is_a_json_404_too(debug) -> None:
    response = Client().get("/api/v2/offers/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.urls("tests.core.error_urls")
def test_a_bug_under_api_is_a_json_500_with_the_request_id(debug) -> None:
    response = Client(raise_request_exception=False).get("/api/v1/buggy/")

    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "server_error"
    assert error["request_id"] == response["X-Request-ID"]
    assert response["X-Request-ID"] in error["message"]
    assert "a bug in an API view" not in response.content.decode()  # no traceback leaks


@pytest.mark.urls("tests.core.error_urls")
def test_a_bug_under_api_is_logged_with_its_traceback_and_request_id(settings, caplog) -> None:
    settings.DEBUG = True

    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = Client(raise_request_exception=False).get("/api/v1/buggy/", HTTP_X_REQUEST_ID="trace-me-1")

    assert response.json()["error"]["request_id"] == "trace-me-1"
    (record,) = [r for r in caplog.records if r.name == "django.request"]
    assert record.exc_info is not None and "a bug in an API view" in str(record.exc_info[1])
    assert record.request_id == "trace-me-1"  # type: ignore[attr-defined]


@pytest.mark.urls("tests.core.error_urls")
def test_the_test_client_still_raises_a_bug_under_api() -> None:
    with pytest.raises(RuntimeError, match="a bug in an API view"):
        Client().get("/api/v1/buggy/")


def test_pages_outside_api_keep_djangos_html_404(debug) -> None:
    response = Client().get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.urls("tests.core.error_urls")
def test_pages_outside_api_keep_djangos_html_500(debug) -> None:
    response = Client(raise_request_exception=False).get("/dashboard/buggy/")

    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    assert ("a bug in a page" in response.content.decode()) is debug  # the debug page only with DEBUG on


def test_a_disallowed_host_under_api_is_a_json_400(debug, settings) -> None:
    settings.ALLOWED_HOSTS = ["api.example.test"]

    response = Client(raise_request_exception=False).get("/api/v1/hubs/", HTTP_HOST="evil.example.test")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


# --- an invalid choice names the valid ones --------------------------------------------


def test_an_invalid_choice_in_a_body_lists_the_valid_values(buyer_client) -> None:
    body = {"gpu_model": "910B", "cards": 1, "workload": "realtime", "duration_hours": "1"}

    response = buyer_client.post("/api/v1/orders/", body, format="json")

    assert response.status_code == 400
    (error,) = response.json()["error"]["fields"]["workload"]
    assert error == {
        "code": "invalid_choice",
        "message": '"realtime" is not a valid choice; workload must be one of: realtime_inference, '
        "batch_inference, training.",
    }


def test_an_invalid_choice_in_a_list_of_choices_lists_the_valid_values(issuer, make_client) -> None:
    body = valid_program(workloads=["training", "gaming"])

    response = make_client(issuer).post("/api/v1/voucher-programs/", body, format="json")

    assert response.status_code == 400
    errors = response.json()["error"]["fields"]["workloads"]
    assert errors == {
        "1": [
            {
                "code": "invalid_choice",
                "message": '"gaming" is not a valid choice; workloads must be one of: realtime_inference, '
                "batch_inference, training.",
            }
        ]
    }


def test_an_invalid_choice_in_a_query_parameter_lists_the_valid_values(buyer_client) -> None:
    response = buyer_client.get("/api/v1/orders/?status=done")

    assert response.status_code == 400
    (error,) = response.json()["error"]["fields"]["status"]
    assert error == {
        "code": "invalid_choice",
        "message": "done is not a valid choice; status must be one of: placed, cancelled, ended.",
    }


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_a_write_to_an_api_path_without_its_slash_is_a_404_that_names_the_path(debug, method) -> None:
    response = getattr(Client(), method)("/api/v1/orders", {}, content_type="application/json")

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert "Did you mean /api/v1/orders/?" in error["message"]


def test_a_read_of_an_api_path_without_its_slash_is_still_redirected(debug) -> None:
    response = Client().get("/api/v1/hubs")

    assert (response.status_code, response["Location"]) == (301, "/api/v1/hubs/")
