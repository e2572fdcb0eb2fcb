"""What an error report (the admins' mail, the debug page) may show of a request to the API.

The app's views take credentials in a JSON body. Django's ``sensitive_post_parameters`` only
knows ``request.POST``, and ``sensitive_variables`` only the names given to the innermost
decorated function: a local variable of a function deeper down (the client's request body,
a serializer whose ``repr`` shows its data) would be printed in full. So the views install
:class:`ApiReporterFilter` on each request (``request.exception_reporter_filter``), which:

* hides every POST value (Django parses a form body into ``request.POST``; DRF copies its own
  parse of a form-encoded PUT there too);
* hides every local variable of every frame running under a ``sensitive_variables()`` marked
  "all" (the views' ``dispatch``), even where an inner decorator names fewer variables;
* is active also with ``DEBUG = True`` (a staging server's debug page is a report too).

Django never puts the raw body (``request.body``) in a report; the frames' variables were the
way DRF's parsed data (``request.data``) could get in, and those are hidden. The traceback
itself (files, lines, code) stays, so the report is still useful.
"""

from __future__ import annotations

from types import FrameType
from typing import Any

from django.http import HttpRequest
from django.views.debug import SafeExceptionReporterFilter

_WRAPPER = "sensitive_variables_wrapper"


def _under_all_sensitive(frame: FrameType | None) -> bool:
    """Whether ``frame`` or a caller of it is a ``sensitive_variables()`` (all) wrapper."""
    while frame is not None:
        if frame.f_code.co_name == _WRAPPER and _WRAPPER in frame.f_locals:
            if getattr(frame.f_locals[_WRAPPER], "sensitive_variables", None) == "__ALL__":
                return True
        frame = frame.f_back
    return False


class ApiReporterFilter(SafeExceptionReporterFilter):
    """Django's safe filter, hiding the whole POST and every variable under the API's views."""

    def is_active(self, request: HttpRequest | None) -> bool:
        return True

    def get_post_parameters(self, request: HttpRequest | None) -> dict[str, str]:
        # Only what was parsed already: a report must not start reading (or fail on) a body.
        post = getattr(request, "_post", None) if request is not None else None
        return {key: self.cleansed_substitute for key in (post or {})}

    def get_traceback_frame_variables(
        self, request: HttpRequest | None, tb_frame: FrameType
    ) -> Any:
        if _under_all_sensitive(tb_frame):
            return [(name, self.cleansed_substitute) for name in tb_frame.f_locals]
        return super().get_traceback_frame_variables(request, tb_frame)
