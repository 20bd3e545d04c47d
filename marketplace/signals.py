from django.dispatch import Signal

# Sent after commit: lease. Billing listens (holds on prepaid credit, metering).
lease_started = Signal()
lease_ended = Signal()
