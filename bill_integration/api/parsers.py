"""The JSON parser of the app's views: hostile bodies end in the API's error shape, not a 500.

DRF's :class:`~rest_framework.parsers.JSONParser` lets ``RecursionError`` escape (a body of
100,000 ``[`` is enough), which Django answers with its HTML 500 page. This parser answers
``malformed_request`` (400) for that and for any JSON nested deeper than
:data:`MAX_JSON_DEPTH` (the link form is one flat object: depth is only ever an attack).

A body over Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` never reaches a parser: DRF reads
``request.body`` before calling it, and Django raises ``RequestDataTooBig`` there. The app's
exception handler (:mod:`bill_integration.api.errors`) turns that into ``request_too_large``.

Set on the app's views only (``BillAPIView.parser_classes``), never through
``REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

#: Deepest nesting of arrays and objects accepted (the link form's body has depth 1).
MAX_JSON_DEPTH = 32

TOO_DEEP_MESSAGE = _(
    "The request body nests JSON arrays or objects too deeply (more than %(limit)d levels); "
    "send one flat JSON object."
)


class JSONTooDeep(ParseError):
    """A JSON body nested deeper than :data:`MAX_JSON_DEPTH` (answered as malformed_request)."""

    default_code = "too_deep"


def json_depth_exceeds(data: Any, limit: int) -> bool:
    """Whether ``data`` (parsed JSON) nests lists and dicts more than ``limit`` levels deep.

    Iterative, so it cannot itself run out of stack.
    """
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Mapping):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class BillJSONParser(JSONParser):
    """DRF's JSON parser, refusing too-deep JSON with a :class:`ParseError` instead of a 500."""

    max_depth = MAX_JSON_DEPTH

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            # The C scanner gave up on the depth; the stack is already unwound here.
            raise JSONTooDeep(TOO_DEEP_MESSAGE % {"limit": self.max_depth}) from None
        if json_depth_exceeds(data, self.max_depth):
            raise JSONTooDeep(TOO_DEEP_MESSAGE % {"limit": self.max_depth})
        return data
