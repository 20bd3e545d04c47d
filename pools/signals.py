from django.dispatch import Signal

# Sent after commit when a pool's status changes: pool, from_status, to_status.
# Higher apps (the marketplace ends the leases of a suspended pool) listen here.
pool_status_changed = Signal()
