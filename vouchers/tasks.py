"""Thin Celery tasks: each calls a service that is safe to run twice."""

from celery import shared_task

from vouchers import services


@shared_task(name="vouchers.tasks.vouchers_expire")
def vouchers_expire() -> int:
    """Expire vouchers past their validity (and grace); their unused value is breakage (Celery beat)."""
    return services.vouchers_expire()
