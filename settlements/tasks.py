from celery import shared_task

from settlements.services.schedule import settlements_due as run_due


@shared_task(name="settlements.tasks.settlements_due", acks_late=True)
def settlements_due() -> int:
    """Beat, hourly: on SETTLEMENT_DAY, last month's claims and payout run (once each)."""
    return run_due()
