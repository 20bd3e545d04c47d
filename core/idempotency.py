"""``Idempotency-Key`` for writes that move money or create things.

Decorate a DRF handler with ``@idempotent``. The first successful answer is
stored with a hash of the request; the same key and body again replays it, the
same key with another body or path is a 409. The record is inserted in the
same transaction as the handler's work, so a concurrent retry waits on the
unique index until the first finishes and then replays its answer; a failed
request stores nothing and may be retried.

A secret in an answer is not stored: ``@idempotent(unstored=("client_secret",),
on_replay=...)`` keeps the answer without those fields, and ``on_replay`` puts
them back from where they are kept (Stripe, for a PaymentIntent's client secret).
"""

import functools
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from core.exceptions import ApplicationError, ConflictError
from core.models import IdempotencyRecord

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Set on every handler that honours the header: core.schema declares the header on exactly these.
HONOURS_HEADER = "honours_idempotency_key"

Handler = Callable[..., Response]
Body = dict[str, Any]


def _scope(request: Request) -> str:
    organization_id = getattr(request.user, "organization_id", None)
    return str(organization_id if organization_id is not None else request.user.pk)


def _fingerprint(request: Request) -> str:
    digest = hashlib.sha256()
    digest.update((request.method or "").encode())
    digest.update(b"\0")
    digest.update(request.path.encode())
    digest.update(b"\0")
    digest.update(request.body)
    return digest.hexdigest()


def _replay(record: IdempotencyRecord, fingerprint: str, on_replay: Callable[[Body], Body] | None) -> Response:
    if record.request_hash != fingerprint:
        raise ConflictError(
            gettext("The %(HEADER)s %(key)s was already used for a different request. Use a new key for a new request.")
            % {"HEADER": HEADER, "key": f"{record.key!r}"},
            code="idempotency_key_reused",
        )
    body = on_replay(record.response_body) if on_replay else record.response_body
    return Response(body, status=record.status_code, headers={"Idempotent-Replayed": "true"})


class _KeyTaken(Exception):
    pass


def _claim(*, scope: str, key: str, request: Request, fingerprint: str) -> IdempotencyRecord:
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(
                scope=scope,
                key=key,
                method=request.method or "",
                path=request.path[:500],
                request_hash=fingerprint,
                status_code=0,
                response_body={},
            )
    except IntegrityError:
        raise _KeyTaken from None


def idempotent(
    handler: Handler | None = None,
    *,
    unstored: tuple[str, ...] = (),
    on_replay: Callable[[Body], Body] | None = None,
) -> Any:
    """``@idempotent``, or ``@idempotent(unstored=(...), on_replay=...)`` for an answer with secrets."""
    if handler is None:
        return functools.partial(idempotent, unstored=unstored, on_replay=on_replay)

    @functools.wraps(handler)
    def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return handler(view, request, *args, **kwargs)
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise ApplicationError(
                gettext("%(HEADER)s must be 1 to %(MAX_KEY_LENGTH)s printable characters.")
                % {"HEADER": HEADER, "MAX_KEY_LENGTH": MAX_KEY_LENGTH},
                code="invalid_idempotency_key",
            )
        scope, fingerprint = _scope(request), _fingerprint(request)
        expired_before = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
        IdempotencyRecord.objects.filter(scope=scope, key=key, created_at__lt=expired_before).delete()

        existing = IdempotencyRecord.objects.filter(scope=scope, key=key).first()
        if existing is not None:
            return _replay(existing, fingerprint, on_replay)
        try:
            with transaction.atomic():
                record = _claim(scope=scope, key=key, request=request, fingerprint=fingerprint)
                response = handler(view, request, *args, **kwargs)
                if not 200 <= response.status_code < 300:
                    transaction.set_rollback(True)
                    return response
                record.status_code = response.status_code
                body = json.loads(JSONRenderer().render(response.data) or b"null")
                if isinstance(body, dict):
                    body = {name: value for name, value in body.items() if name not in unstored}
                record.response_body = body
                record.save(update_fields=["status_code", "response_body"])
                return response
        except _KeyTaken:
            # A concurrent request with the same key committed first.
            return _replay(IdempotencyRecord.objects.get(scope=scope, key=key), fingerprint, on_replay)

    setattr(wrapper, HONOURS_HEADER, True)
    return wrapper
