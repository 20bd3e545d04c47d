"""The API's error messages in the language of ``Accept-Language`` (English or Simplified Chinese):
the ``code`` never changes, only the ``message``; the answer says its language in
``Content-Language`` and varies by ``Accept-Language``."""

import re
import uuid
from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db
CHINESE = re.compile(r"[\u4e00-\u9fff]")


def both(send: Any) -> tuple[Any, Any]:
    """The same request in English (no Accept-Language) and in Chinese (a browser in mainland China)."""
    return send(), send(HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9,en;q=0.8")


def same_code_other_message(english: Any, chinese: Any, status: int) -> tuple[str, str]:
    assert english.status_code == chinese.status_code == status
    assert english.json()["error"]["code"] == chinese.json()["error"]["code"]
    assert english["Content-Language"] == "en" and chinese["Content-Language"] == "zh-hans"
    assert "Accept-Language" in chinese["Vary"]
    shown = english.json()["error"]["message"], chinese.json()["error"]["message"]
    assert not CHINESE.search(shown[0]) and CHINESE.search(shown[1]), shown
    return shown


def test_a_domain_refusal_keeps_its_code_and_translates_its_message(buyer_client) -> None:
    path = f"/api/v1/invoices/{uuid.uuid4()}/"

    english, chinese = both(lambda **headers: buyer_client.get(path, **headers))

    assert same_code_other_message(english, chinese, 404) == ("No such invoice.", "没有这张发票。")


def test_a_message_with_figures_keeps_the_figures(buyer_client) -> None:
    english, chinese = both(lambda **headers: buyer_client.get("/api/v1/invoices/?page_size=0", **headers))

    shown = same_code_other_message(english, chinese, 400)
    assert english.json()["error"]["code"] == "invalid_page_size" or english.json()["error"]["code"]
    assert re.findall(r"\d+", shown[0]) == re.findall(r"\d+", shown[1])


def test_invalid_fields_are_named_in_either_language_with_djangos_and_drfs_own_messages(buyer_client) -> None:
    english, chinese = both(
        lambda **headers: buyer_client.post("/api/v1/api-keys/", {"name": ["a"], "role": 7}, format="json", **headers)
    )

    shown = same_code_other_message(english, chinese, 400)
    assert "name" in shown[1] and "role" in shown[1]  # the fields keep their names
    english_fields, chinese_fields = english.json()["error"]["fields"], chinese.json()["error"]["fields"]
    assert {name: [e["code"] for e in errors] for name, errors in english_fields.items()} == {
        name: [e["code"] for e in errors] for name, errors in chinese_fields.items()
    }
    assert all(CHINESE.search(error["message"]) for errors in chinese_fields.values() for error in errors)


def test_a_request_without_a_key_is_told_how_to_send_one_in_chinese() -> None:
    english, chinese = both(lambda **headers: Client().get("/api/v1/invoices/", **headers))

    shown = same_code_other_message(english, chinese, 401)
    assert "Authorization: Bearer <key>" in shown[1]


def test_an_unknown_path_and_a_body_too_large_answer_in_chinese_before_any_view(buyer_client, settings) -> None:
    settings.API_MAX_BODY_BYTES = 100
    english, chinese = both(lambda **headers: buyer_client.get("/api/v1/no-such-thing/", **headers))
    big_english, big_chinese = both(
        lambda **headers: buyer_client.post("/api/v1/api-keys/", {"name": "x" * 200}, format="json", **headers)
    )

    assert same_code_other_message(english, chinese, 404)[1].startswith("没有此路径：/api/v1/no-such-thing/")
    same_code_other_message(big_english, big_chinese, 413)


def test_a_language_the_service_does_not_speak_is_answered_in_english(buyer_client) -> None:
    answer = buyer_client.get(f"/api/v1/invoices/{uuid.uuid4()}/", HTTP_ACCEPT_LANGUAGE="fr-FR, de;q=0.5")

    assert answer["Content-Language"] == "en"
    assert answer.json()["error"]["message"] == "No such invoice."
