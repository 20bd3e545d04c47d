from typing import Any

from django.conf import settings
from django.utils.translation import gettext
from rest_framework import pagination
from rest_framework.request import Request

from core.exceptions import ApplicationError


def _bad_parameter(name: str, message: str) -> ApplicationError:
    return ApplicationError(
        message, code="invalid_pagination", fields={name: [{"code": "invalid", "message": message}]}
    )


class PageNumberPagination(pagination.PageNumberPagination):
    """``?page=`` and ``?page_size=`` (1 to API_MAX_PAGE_SIZE).

    A page size out of range is a 400 that states the limit rather than silently
    capped, so a client never mistakes a capped page for the whole list.
    """

    page_size = settings.API_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = settings.API_MAX_PAGE_SIZE

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            raise _bad_parameter(
                self.page_size_query_param,
                gettext("page_size must be a whole number from 1 to %(max_page_size)s.")
                % {"max_page_size": self.max_page_size},
            )
        return int(raw)

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        raw = request.query_params.get(self.page_query_param)
        if raw is not None and raw not in self.last_page_strings and not (raw.isdigit() and int(raw) >= 1):
            raise _bad_parameter(self.page_query_param, gettext("page must be a whole number from 1, or 'last'."))
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size}
                parameter["description"] = f"Results per page, 1 to {self.max_page_size} (default {self.page_size})."
            elif parameter["name"] == self.page_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
        return parameters
