"""The audit trail: who did what, when, to what and from where; append-only; operators read it."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from billing.services.invoices import invoice_finalize, invoice_for_period
from organizations.models import AuditEvent
from organizations.services import api_key_create, audit_record
from pools.models import ResourcePool
from tests.billing.factories import leased, usage
from tests.factories import BuyerFactory, pool_factory
from tests.reliability.world import FINALIZED_AT, LEASED_AT, USED_AT
from tests.vouchers.factories import program_factory, voucher_factory

pytestmark = pytest.mark.django_db


def keyed_client(organization, *, ip: str = "198.51.100.7") -> tuple[APIClient, str]:
    api_key, raw_key = api_key_create(organization=organization, name="audited", created_by="test")
    client = APIClient(REMOTE_ADDR=ip, HTTP_USER_AGENT="audit-test/1.0", HTTP_X_REQUEST_ID="req-audit-1")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client, api_key.prefix


def only_event(action: str) -> AuditEvent:
    (event,) = AuditEvent.objects.filter(action=action)
    return event


def finalized_invoice(buyer, provider):  # type: ignore[no-untyped-def]
    lease = leased(buyer=buyer, provider=provider, at=LEASED_AT)
    usage(lease, USED_AT, seconds=8 * 3600)
    return invoice_finalize(invoice_id=invoice_for_period(buyer=buyer, at=USED_AT).pk, now=FINALIZED_AT)


def test_an_operator_approving_a_pool_is_recorded_with_who_when_what_and_from_where(operator, provider) -> None:
    pool = pool_factory(provider=provider, status=ResourcePool.Status.PENDING)
    client, prefix = keyed_client(operator)
    before = timezone.now()

    response = client.post(f"/api/v1/pools/{pool.pk}/approve/", {"reason": "checked"}, format="json")

    assert response.status_code == 200
    event = only_event("pool.approve")
    assert (event.target_type, event.target_id) == ("resourcepool", str(pool.pk))
    assert event.organization_id == provider.pk
    assert event.actor == f"{operator.slug}/{prefix}"
    assert (event.actor_organization_id, event.actor_api_key_prefix) == (operator.pk, prefix)
    assert (event.source, event.ip, event.user_agent, event.request_id) == (
        "http",
        "198.51.100.7",
        "audit-test/1.0",
        "req-audit-1",
    )
    assert before <= event.occurred_at <= timezone.now()
    assert event.summary == {"from_status": "pending", "to_status": "active", "reason": "checked", "name": "pool"}


def test_suspending_and_retiring_a_pool_are_recorded(operator, provider, make_client) -> None:
    pool = pool_factory(provider=provider)

    make_client(operator).post(f"/api/v1/pools/{pool.pk}/suspend/", {"reason": "audit"}, format="json")
    make_client(provider).post(f"/api/v1/pools/{pool.pk}/retire/", {"reason": "old"}, format="json")

    assert only_event("pool.suspend").summary["to_status"] == "suspended"
    assert only_event("pool.retire").actor_organization_id == provider.pk


def test_an_action_that_is_refused_leaves_no_event(operator, provider, make_client) -> None:
    pool = pool_factory(provider=provider)  # already active

    response = make_client(operator).post(f"/api/v1/pools/{pool.pk}/approve/", {"reason": ""}, format="json")

    assert response.status_code == 409
    assert not AuditEvent.objects.filter(action="pool.approve").exists()


def test_an_issuers_program_and_vouchers_are_recorded_from_creation_to_revocation(issuer, buyer) -> None:
    client, _ = keyed_client(issuer)
    valid_until = (timezone.now() + timedelta(days=300)).isoformat()
    created = client.post(
        "/api/v1/voucher-programs/",
        {
            "name": "Hangzhou 2027",
            "budget": "100000.00",
            "coverage_share": "0.3",
            "per_company_yearly_cap": "20000.00",
            "valid_until": valid_until,
        },
        format="json",
    ).json()
    program_id = created["id"]
    client.post(f"/api/v1/voucher-programs/{program_id}/open/", format="json")
    issued = client.post(
        f"/api/v1/voucher-programs/{program_id}/vouchers/",
        [{"organization": str(buyer.pk), "face_value": "15000.00"}],
        format="json",
    ).json()
    client.post(f"/api/v1/vouchers/{issued[0]['id']}/revoke/", {"reason": "moved away"}, format="json")
    client.post(f"/api/v1/voucher-programs/{program_id}/close/", format="json")

    assert only_event("voucher_program.create").summary["budget"] == "100000.00"
    assert only_event("voucher_program.open").target_id == program_id
    issue = only_event("voucher.issue")
    assert (issue.target_id, issue.summary["face_value"], issue.summary["buyer"]) == (
        issued[0]["id"],
        "15000.00",
        str(buyer.pk),
    )
    assert only_event("voucher.revoke").summary == {
        "buyer": str(buyer.pk),
        "released": "15000.00",
        "reason": "moved away",
    }
    assert only_event("voucher_program.close").summary == {"from_status": "open"}
    assert set(AuditEvent.objects.values_list("organization_id", flat=True)) >= {issuer.pk}


def test_voiding_an_invoice_and_recording_a_bank_transfer_are_recorded(operator, buyer, provider, make_client) -> None:
    invoice = finalized_invoice(buyer, provider)
    client = make_client(operator)
    due = invoice.amount_due

    client.post(f"/api/v1/invoices/{invoice.pk}/bank-transfer/", {"amount": "1.00"}, format="json")
    client.post(f"/api/v1/invoices/{invoice.pk}/void/", {"reason": "billed twice"}, format="json")

    transfer = only_event("invoice.bank_transfer")
    assert (transfer.organization_id, transfer.summary["amount"]) == (buyer.pk, "1.00")
    void = only_event("invoice.void")
    assert void.summary["reason"] == "billed twice" and void.summary["amount_due"] == f"{due / 100:.2f}"


def test_creating_and_revoking_a_key_through_the_api_is_recorded(buyer) -> None:
    client, prefix = keyed_client(buyer)

    created = client.post("/api/v1/api-keys/", {"name": "ci", "role": "member"}, format="json").json()
    client.delete(f"/api/v1/api-keys/{created['id']}/")

    creation = AuditEvent.objects.get(action="api_key.create", target_id=created["id"])
    assert creation.actor == f"api-key:{prefix}"
    assert creation.summary == {"name": "ci", "role": "member", "prefix": created["prefix"]}
    assert "key" not in str(creation.summary).replace("prefix", "")  # the secret is never recorded
    assert only_event("api_key.revoke").actor_api_key_prefix == prefix


def test_a_key_made_by_a_management_command_is_recorded_as_that_command(buyer) -> None:
    call_command("create_api_key", "--org", buyer.slug, stdout=open("/dev/null", "w"))  # noqa: SIM115

    event = AuditEvent.objects.filter(action="api_key.create").latest("occurred_at")
    assert (event.source, event.actor, event.ip) == ("command:create_api_key", "command:create_api_key", None)


def test_the_database_refuses_to_change_or_delete_an_event(buyer) -> None:
    event = audit_record(actor="test", action="api_key.create", target=buyer, organization=buyer)

    for statement in (
        "UPDATE organizations_auditevent SET actor = 'someone else' WHERE id = %s",
        "DELETE FROM organizations_auditevent WHERE id = %s",
    ):
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement, [event.pk])

    event.refresh_from_db()
    assert event.actor == "test"


def test_the_database_refuses_to_truncate_the_trail(buyer) -> None:
    audit_record(actor="test", action="api_key.create", target=buyer, organization=buyer)

    refused = pytest.raises(IntegrityError, match="TRUNCATE of organizations_auditevent refused")
    with refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("TRUNCATE organizations_auditevent")

    assert AuditEvent.objects.filter(organization_id=buyer.pk).count() == 1


def test_operators_read_the_trail_filtered_by_action_organization_and_time(operator, make_client) -> None:
    first, second = BuyerFactory(), BuyerFactory()
    audit_record(actor="test", action="api_key.create", target=first, organization=first)
    audit_record(actor="test", action="api_key.revoke", target=second, organization=second)
    client = make_client(operator)  # its own key creation is an event too

    by_action = client.get("/api/v1/audit-events/?action=api_key.revoke").json()
    by_organization = client.get(f"/api/v1/audit-events/?organization={first.pk}").json()
    future = (timezone.now() + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    later = client.get("/api/v1/audit-events/", {"occurred_after": future}).json()

    assert [event["organization_id"] for event in by_action["results"]] == [str(second.pk)]
    assert [event["action"] for event in by_organization["results"]] == ["api_key.create"]
    assert later["results"] == []


@pytest.mark.parametrize("kind", ["buyer", "provider", "issuer"])
def test_only_operators_read_the_trail(kind, request, make_client) -> None:
    client = make_client(request.getfixturevalue(kind))

    assert client.get("/api/v1/audit-events/").status_code == 403


def test_the_admin_shows_the_trail_read_only(admin_client, buyer) -> None:
    event = audit_record(actor="test", action="api_key.create", target=buyer, organization=buyer)

    assert admin_client.get("/admin/organizations/auditevent/").status_code == 200
    assert admin_client.get("/admin/organizations/auditevent/add/").status_code == 403
    page = admin_client.get(f"/admin/organizations/auditevent/{event.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert admin_client.post(f"/admin/organizations/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403


def test_a_voucher_issued_by_a_service_call_is_recorded_as_system() -> None:
    voucher = voucher_factory(program_factory())

    event = AuditEvent.objects.get(action="voucher.issue", target_id=str(voucher.pk))
    assert (event.source, event.actor, event.ip) == ("system", "test", None)


def test_a_compute_bank_grant_is_recorded(buyer) -> None:
    from billing.models import CreditGrant
    from billing.services.bank.grants import grant_create

    grant = grant_create(buyer=buyer, source=CreditGrant.Source.PROMOTION, amount=12_345, by="admin:ops", note="launch")

    event = only_event("bank.credit_grant")
    assert (event.target_id, event.organization_id, event.actor) == (str(grant.pk), buyer.pk, "admin:ops")
    assert event.summary["amount"] == "123.45" and event.summary["source"] == "promotion"
