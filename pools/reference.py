"""Load the hubs and the GPU model catalog from ``pools/reference_data.py``.

Called by a data migration (with the historical models) and safe to run again:
rows are upserted by code.
"""

from decimal import Decimal
from typing import Any

from pools import reference_data


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def hub_defaults(hub: dict[str, Any]) -> dict[str, Any]:
    """A hub's row from its reference entry (the national hubs here, the orbit hub in ``orbit``)."""
    return {
        "name": hub["name"],
        "name_zh": hub.get("name_zh", ""),
        "region": hub["region"],
        "cluster": hub.get("cluster", ""),
        "provinces": hub["provinces"],
        "hub_provinces": hub["hub_provinces"],
        "tariff": _jsonable(hub["tariff"]),
        "pue": hub["pue"],
        "green_share": hub["green_share"],
        "latency_ms": hub["latency_ms"],
    }


def load_reference_data(hub_model: Any, gpu_model_model: Any) -> None:
    for hub in reference_data.HUBS:
        hub_model.objects.update_or_create(code=hub["code"], defaults=hub_defaults(hub))
    for gpu in reference_data.GPU_MODELS:
        gpu_model_model.objects.update_or_create(
            code=gpu["code"],
            defaults={
                "name": gpu["name"],
                "vendor": gpu["vendor"],
                "memory_gb": gpu["memory_gb"],
                "fp16_tflops": gpu["fp16_tflops"],
                "power_watts": gpu["power_watts"],
            },
        )
