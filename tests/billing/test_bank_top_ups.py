"""Top-ups through Stripe (localstripe): credit only when Stripe confirms, once per PaymentIntent."""

import time
import urllib.parse
import urllib.request
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.utils import timezone

from billing.models import BankEvent, CreditGrant, JournalEntry, StripeEvent, TopUp
from billing.services.bank.grants import bank_draw, bank_settings_set
from billing.services.bank.top_ups import bank_auto_top_up, top_up_create, top_ups_settle_stale
from billing.services.payments import payment_method_set
from billing.services.reconcile import reconcile
from billing.stripe_client import stripe_client
from tests.billing.factories import credit
from tests.billing.test_payments import DECLINED_ON_CHARGE, GOOD_CARD, card, signed
from tests.factories import BuyerFactory

pytestmark = pytest.mark.django_db


def top_up(client, amount: str = "500.00", **body):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/bank/top-ups/", {"amount": amount, **body}, format="json")


def intent_event(event_id: str, kind: str, payment_intent: str, amount: int, **fields) -> dict:  # type: ignore[no-untyped-def]
    obj = {"id": payment_intent, "object": "payment_intent", "amount": amount, "currency": "cny", **fields}
    return {"id": event_id, "object": "event", "type": f"payment_intent.{kind}", "data": {"object": obj}}


def deliver(event: dict):  # type: ignore[no-untyped-def]
    payload, signature = signed(event)
    return Client().post(
        "/api/v1/webhooks/stripe/", payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
    )


@pytest.fixture
def stripe_webhooks(stripe, live_server, settings):  # type: ignore[no-untyped-def]
    """localstripe sends its events, signed, to this test's live server; afterwards to nowhere."""

    def register(url: str) -> None:
        data = urllib.parse.urlencode({"url": url, "secret": settings.STRIPE_WEBHOOK_SECRET}).encode()
        urllib.request.urlopen(urllib.request.Request(f"{stripe}/_config/webhooks/bank-tests", data=data), timeout=5)

    register(f"{live_server.url}/api/v1/webhooks/stripe/")
    yield
    register("http://127.0.0.1:9/nowhere")


def wait_for(condition, seconds: float = 15) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.wall_clock  # localstripe signs its webhooks with its own clock
@pytest.mark.django_db(transaction=True)
def test_a_top_up_is_granted_when_stripe_confirms_it_and_replays_grant_nothing_more(
    stripe_webhooks, buyer, buyer_client
) -> None:
    # given a top-up made through the API
    response = top_up(buyer_client, "500.00")
    assert response.status_code == 201, response.json()
    made = response.json()
    assert made["status"] == "pending" and made["client_secret"]
    assert not CreditGrant.objects.exists()

    # when the buyer confirms its PaymentIntent with a card and Stripe sends the webhook
    # (what Stripe.js does; localstripe takes the card as an update, then the confirmation)
    stripe_client().v1.payment_intents.update(made["payment_intent"], params={"payment_method": card(GOOD_CARD)})
    stripe_client().v1.payment_intents.confirm(made["payment_intent"])
    wait_for(lambda: TopUp.objects.get(pk=made["id"]).status == "succeeded")

    # then the credit is granted, once, as paid credit
    (grant,) = CreditGrant.objects.all()
    assert (grant.source, grant.amount, grant.buyer_id) == ("top_up", 50_000, buyer.pk)
    bank = buyer_client.get("/api/v1/bank/").json()
    assert (bank["balance"], bank["available"]) == ("500.00", "500.00")
    assert buyer_client.get(f"/api/v1/bank/top-ups/{made['id']}/").json()["status"] == "succeeded"

    # and the same event delivered again, or another event for the same PaymentIntent, grants nothing more
    event = StripeEvent.objects.get(
        type="payment_intent.succeeded", payload__data__object__id=made["payment_intent"]
    ).payload
    answers = [deliver(event).status_code for _ in range(5)]
    again = deliver({**event, "id": "evt_another_delivery"})
    assert answers == [200] * 5 and again.status_code == 200
    assert CreditGrant.objects.count() == 1
    assert JournalEntry.objects.filter(kind="bank.grant.top_up").count() == 1
    assert reconcile() == []


def test_a_top_up_whose_payment_fails_grants_nothing_until_it_succeeds_and_tells_the_buyer(
    stripe, buyer, buyer_client
) -> None:
    made = top_up(buyer_client, "80.00").json()

    response = deliver(
        intent_event(
            "evt_fail", "payment_failed", made["payment_intent"], 8_000, last_payment_error={"message": "declined"}
        )
    )

    assert response.status_code == 200
    assert TopUp.objects.get(pk=made["id"]).status == "failed"
    assert not CreditGrant.objects.exists()
    assert BankEvent.objects.get(buyer=buyer).kind == "top_up_failed"
    # a failure is not final: the buyer confirms the same PaymentIntent with another card, and is credited once
    deliver(intent_event("evt_retried_ok", "succeeded", made["payment_intent"], 8_000))
    deliver(intent_event("evt_retried_ok_again", "succeeded", made["payment_intent"], 8_000))
    assert CreditGrant.objects.get().amount == 8_000
    assert TopUp.objects.get(pk=made["id"]).status == "succeeded"


def test_a_webhook_for_an_unknown_payment_intent_is_a_logged_harmless_no_op(stripe, buyer, buyer_client) -> None:
    top_up(buyer_client)

    response = deliver(intent_event("evt_unknown", "succeeded", "pi_nobody_knows", 50_000, metadata={"top_up": "x"}))

    assert response.status_code == 200
    assert StripeEvent.objects.get(event_id="evt_unknown").status == "ignored"
    assert not CreditGrant.objects.exists()
    assert TopUp.objects.get().status == "pending"


def test_a_webhook_charging_another_amount_grants_nothing_and_is_recorded_as_failed(stripe, buyer_client) -> None:
    made = top_up(buyer_client, "500.00").json()

    deliver(intent_event("evt_odd", "succeeded", made["payment_intent"], 1))

    record = StripeEvent.objects.get(event_id="evt_odd")
    assert (record.status, "another amount" in record.error) == ("failed", True)
    assert not CreditGrant.objects.exists()


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"amount": "0"}, "invalid_amount", "amount"),
        ({"amount": "-5.00"}, "invalid_amount", "amount"),
        ({"amount": "1000000.01"}, "amount_too_large", "amount"),
        ({"amount": "9999999999999.99"}, "amount_too_large", "amount"),
        ({"amount": "99999999999999999999"}, "validation_error", "amount"),
        ({"amount": "0.001"}, "validation_error", "amount"),
        ({"amount": "abc"}, "validation_error", "amount"),
        ({"amount": "500.00", "currency": "USD"}, "unsupported_currency", "currency"),
        ({"amount": "500.00", "account": "someone-else"}, "unknown_field", "account"),
        ({}, "validation_error", "amount"),
    ],
)
def test_bad_top_ups_are_refused_with_a_stable_code_and_record_nothing(stripe, buyer_client, body, code, field) -> None:  # type: ignore[no-untyped-def]
    response = buyer_client.post("/api/v1/bank/top-ups/", body, format="json")

    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == code
    assert field in response.json()["error"]["fields"]
    assert not TopUp.objects.exists()
    assert not stripe_client().v1.payment_intents.list().data


def test_a_top_up_retried_with_its_idempotency_key_makes_one_payment_intent(stripe, buyer_client) -> None:
    first = buyer_client.post("/api/v1/bank/top-ups/", {"amount": "20.00"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    second = buyer_client.post("/api/v1/bank/top-ups/", {"amount": "20.00"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    other = buyer_client.post("/api/v1/bank/top-ups/", {"amount": "30.00"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")

    assert (first.status_code, second.status_code, other.status_code) == (201, 201, 409)
    assert second.json() == first.json()
    assert TopUp.objects.count() == 1
    assert len(stripe_client().v1.payment_intents.list().data) == 1


def test_the_idempotency_table_keeps_no_client_secret_and_a_replay_still_gives_it(stripe, buyer_client) -> None:
    # given a top-up made with an Idempotency-Key
    first = buyer_client.post("/api/v1/bank/top-ups/", {"amount": "20.00"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    secret = first.json()["client_secret"]

    # then its client secret is nowhere in the idempotency table
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM core_idempotencyrecord")
        assert cursor.fetchone()[0] == 1
        cursor.execute("SELECT count(*) FROM core_idempotencyrecord t WHERE t::text LIKE %s", [f"%{secret}%"])
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT count(*) FROM core_idempotencyrecord t WHERE t::text LIKE '%%client_secret%%'")
        assert cursor.fetchone()[0] == 0

    # and the same request again replays the same answer, client secret included (asked of Stripe)
    again = buyer_client.post("/api/v1/bank/top-ups/", {"amount": "20.00"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert (again.status_code, again["Idempotent-Replayed"]) == (201, "true")
    assert again.json() == first.json()
    assert TopUp.objects.count() == 1


def test_the_migration_takes_client_secrets_out_of_stored_answers(stripe, buyer_client) -> None:
    # given an answer stored before this service stopped keeping client secrets
    from importlib import import_module

    from django.apps import apps

    from core.models import IdempotencyRecord

    first = buyer_client.post("/api/v1/bank/top-ups/", {"amount": "20.00"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    IdempotencyRecord.objects.update(response_body={**first.json()})
    migration = import_module("billing.migrations.0017_idempotency_records_without_client_secret")

    # when the migration runs
    migration.forget_client_secrets(apps, None)

    # then the stored answer has no client secret, and a replay still gives it
    assert "client_secret" not in IdempotencyRecord.objects.get().response_body
    again = buyer_client.post("/api/v1/bank/top-ups/", {"amount": "20.00"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert again.json() == first.json()


def test_only_buyers_have_a_bank(stripe, make_client, provider, issuer, operator) -> None:
    for organization in (provider, issuer, operator):
        client = make_client(organization)
        for response in (
            client.get("/api/v1/bank/"),
            client.get("/api/v1/bank/transactions/"),
            top_up(client),
        ):
            assert response.status_code == 403, (organization.kind, response.json())
    assert not TopUp.objects.exists()


def test_a_buyer_sees_only_its_own_bank(stripe, buyer, buyer_client, other_buyer_client) -> None:
    credit(buyer, 70_000)
    made = top_up(buyer_client).json()

    assert other_buyer_client.get(f"/api/v1/bank/top-ups/{made['id']}/").status_code == 404
    theirs = other_buyer_client.get("/api/v1/bank/").json()
    assert (theirs["balance"], theirs["grants"]) == ("0.00", [])
    assert other_buyer_client.get("/api/v1/bank/transactions/").json()["results"] == []
    mine = buyer_client.get("/api/v1/bank/transactions/").json()["results"]
    assert [(m["reason"], m["amount"], m["source"]) for m in mine] == [("grant", "700.00", "promotion")]
    assert JournalEntry.objects.filter(pk=mine[0]["ledger_entry"], kind="bank.grant.promotion").exists()


def test_a_buyer_sets_its_thresholds_and_an_incomplete_auto_top_up_is_refused(buyer_client) -> None:
    answer = buyer_client.patch(
        "/api/v1/bank/",
        {"low_balance_threshold": "50.00", "auto_top_up_threshold": "20.00", "auto_top_up_amount": "200.00"},
        format="json",
    )
    refused = buyer_client.patch("/api/v1/bank/", {"auto_top_up_amount": None}, format="json")

    assert answer.status_code == 200, answer.json()
    assert (answer.json()["low_balance_threshold"], answer.json()["auto_top_up_amount"]) == ("50.00", "200.00")
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "auto_top_up_incomplete")


def test_credit_below_the_threshold_tops_up_from_the_card_on_file_once(stripe, buyer) -> None:
    payment_method_set(organization=buyer, payment_method=card(GOOD_CARD))
    bank_settings_set(buyer=buyer, changes={"auto_top_up_threshold": 10_000, "auto_top_up_amount": 50_000})
    credit(buyer, 15_000)
    assert bank_auto_top_up(buyer_id=buyer.pk) is None  # above the threshold

    bank_draw(buyer=buyer, amount=10_000, reference="test:spend")
    made = bank_auto_top_up(buyer_id=buyer.pk)

    assert made is not None and (made.status, made.automatic, made.amount) == ("succeeded", True, 50_000)
    assert bank_auto_top_up(buyer_id=buyer.pk) is None  # back above the threshold
    assert sorted(CreditGrant.objects.values_list("source", "remaining")) == [("promotion", 5_000), ("top_up", 50_000)]
    intent = stripe_client().v1.payment_intents.retrieve(made.payment_intent_id)
    assert (intent.status, intent.amount, intent.metadata["top_up"]) == ("succeeded", 50_000, str(made.pk))
    assert reconcile() == []


def test_a_declined_automatic_top_up_grants_nothing_and_tells_the_buyer(stripe, buyer) -> None:
    payment_method_set(organization=buyer, payment_method=card(DECLINED_ON_CHARGE))
    bank_settings_set(buyer=buyer, changes={"auto_top_up_threshold": 10_000, "auto_top_up_amount": 50_000})

    made = bank_auto_top_up(buyer_id=buyer.pk)

    assert made is not None and made.status == "failed"
    assert not CreditGrant.objects.exists()
    assert BankEvent.objects.filter(buyer=buyer, kind="top_up_failed").exists()


def test_the_bank_shows_balance_grants_with_expiry_and_events(buyer, buyer_client) -> None:
    credit(buyer, 10_000)
    bank_draw(buyer=buyer, amount=9_500, reference="test:spend")

    bank = buyer_client.get("/api/v1/bank/").json()

    assert (bank["balance"], bank["held"], bank["available"], bank["mode"]) == ("5.00", "0.00", "5.00", "postpaid")
    assert [(g["remaining"], g["expires_at"]) for g in bank["grants"]] == [("5.00", None)]
    assert [e["kind"] for e in bank["events"]] == ["low_balance"]
    assert Decimal(bank["low_balance_threshold"]) == Decimal("100.00")


def test_the_openapi_schema_documents_the_bank() -> None:
    paths = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()["paths"]

    assert {"get", "patch"} <= set(paths["/api/v1/bank/"])
    assert "get" in paths["/api/v1/bank/transactions/"]
    assert "post" in paths["/api/v1/bank/top-ups/"]
    assert "201" in paths["/api/v1/bank/top-ups/"]["post"]["responses"]


def test_a_lost_automatic_top_up_is_settled_from_stripe_and_never_blocks_the_next(stripe, buyer) -> None:
    payment_method_set(organization=buyer, payment_method=card(GOOD_CARD))
    bank_settings_set(buyer=buyer, changes={"auto_top_up_threshold": 10_000, "auto_top_up_amount": 50_000})
    charged = stripe_client().v1.payment_intents.create(
        params={
            "amount": 50_000,
            "currency": "cny",
            "customer": buyer.stripe_customer.customer_id,
            "payment_method": buyer.stripe_customer.default_payment_method,
        }
    )
    stripe_client().v1.payment_intents.confirm(charged.id)
    lost = TopUp.objects.create(buyer=buyer, amount=50_000, automatic=True, payment_intent_id=charged.id)
    never_made = TopUp.objects.create(buyer=BuyerFactory(), amount=1_000, automatic=True)
    unconfirmed, _ = top_up_create(buyer=buyer, amount=2_000, currency="CNY")
    assert bank_auto_top_up(buyer_id=buyer.pk) is None  # one is in flight
    later = timezone.now() + timedelta(hours=2)

    assert top_ups_settle_stale(now=later) == 2

    assert TopUp.objects.get(pk=lost.pk).status == "succeeded"
    assert TopUp.objects.get(pk=never_made.pk).status == "failed"
    assert TopUp.objects.get(pk=unconfirmed.pk).status == "pending"  # the buyer may still confirm it
    assert CreditGrant.objects.get(buyer=buyer).amount == 50_000
    assert reconcile() == []


def test_the_bank_check_task_expires_credit_and_reviews_holds(buyer) -> None:
    from billing.tasks import bank_check

    credit(buyer, 1_000, expires_at=timezone.now() + timedelta(seconds=1))

    with time_machine.travel(timezone.now() + timedelta(minutes=1)):
        outcome = bank_check.apply().get()

    assert outcome == {"expired_fen": 1_000, "stale_top_ups": 0}


def test_a_stale_automatic_top_up_stripe_never_completed_is_canceled_failed_and_never_blocks_the_next(
    stripe, buyer
) -> None:
    # given an automatic top-up whose PaymentIntent was made but never confirmed (the worker died)
    payment_method_set(organization=buyer, payment_method=card(GOOD_CARD))
    bank_settings_set(buyer=buyer, changes={"auto_top_up_threshold": 10_000, "auto_top_up_amount": 50_000})
    stuck = stripe_client().v1.payment_intents.create(
        params={
            "amount": 50_000,
            "currency": "cny",
            "customer": buyer.stripe_customer.customer_id,
            "payment_method": buyer.stripe_customer.default_payment_method,
        }
    )
    assert stuck.status == "requires_confirmation"
    top_up = TopUp.objects.create(buyer=buyer, amount=50_000, automatic=True, payment_intent_id=stuck.id)
    assert bank_auto_top_up(buyer_id=buyer.pk) is None  # it blocks the next while in flight

    # when stale top-ups are settled
    assert top_ups_settle_stale(now=timezone.now() + timedelta(hours=2)) == 1

    # then Stripe will never charge it, it failed, and the next automatic top-up is charged
    assert stripe_client().v1.payment_intents.retrieve(stuck.id).status == "canceled"
    assert TopUp.objects.get(pk=top_up.pk).status == "failed"
    following = bank_auto_top_up(buyer_id=buyer.pk)
    assert following is not None and following.status == "succeeded"
