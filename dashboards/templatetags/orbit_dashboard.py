"""The operator's view of the orbit hub, as one self-contained partial: ``{% orbit_constellation %}``.

It reads through ``orbit.selectors`` (the API's contacts come from the same computation) and
shows nothing until a constellation is listed, so the national pages stay as they are."""

from typing import Any

from django import template
from django.utils import timezone

from orbit.selectors import constellation_status, constellation_utilization
from pools.models import ResourcePool

register = template.Library()


@register.inclusion_tag("dashboards/_orbit.html")
def orbit_constellation() -> dict[str, Any]:
    rows = constellation_status(now=timezone.now())
    for row in rows:
        row["status_label"] = ResourcePool.Status(row["status"]).label
    return {"satellites": rows, "utilization": constellation_utilization(rows)}
