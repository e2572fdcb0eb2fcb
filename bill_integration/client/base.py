"""The HTTP layer shared by every BILL client: one pooled ``requests.Session``, timeouts.

Every call has a total deadline (``CALL_DEADLINE``, ``deadline.py``) and a size cap
(:data:`MAX_RESPONSE_BYTES`); the answer is read in full before the dialects see it.
Network failures and a passed deadline become :class:`TransientError` here, so the
version-specific modules only deal with answers. Secrets travel in headers or bodies only; :func:`check_no_secret_params`
refuses them in a query string (BILL's own advice, https://developer.bill.com/v2/docs/api-login-best-practices).
"""

from __future__ import annotations

import json as jsonlib
import re
from datetime import timedelta
from typing import Any

import requests
from django.views.decorators.debug import sensitive_variables
from urllib3.exceptions import HTTPError, ProtocolError, ReadTimeoutError

from ..exceptions import (
    BillAPIError,
    BillIntegrationError,
    CallDeadlineExceeded,
    ConfigurationError,
    InvalidApiToken,
    InvalidDevKey,
    SessionInvalid,
    TransientError,
    UnexpectedResponse,
)
from .deadline import (
    Deadline,
    DeadlineAdapter,
    as_seconds,
    configured_call_deadline,
    configured_timeouts,
    enforced,
)
from .errors import unexpected

#: Parameter names that carry a secret; they may never be put in a URL.
SECRET_PARAM_NAMES = frozenset(
    name.lower()
    for name in (
        "sessionId",
        "devKey",
        "password",
        "apiToken",
        "userName",
        "username",
        "consoleApiToken",
        "rememberMeId",
        "mfaId",
    )
)

#: Connections kept open per host; BILL allows 3 concurrent requests per organization, and a
#: worker thread owns its client, so a small pool is plenty.
POOL_CONNECTIONS = 4
POOL_MAXSIZE = 10

#: The largest answer read from BILL. Its biggest documented answers are list pages of at
#: most 100 items (https://developer.bill.com/reference/listallorganizations), far below this;
#: an endless body from a broken proxy is cut off here instead of filling the memory.
MAX_RESPONSE_BYTES = 10 * 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024


def session_credentials(session_id: str, dev_key: str) -> dict[str, str]:
    """The session's credentials as BILL names them: v3 sends them as headers, v2 as form fields."""
    return {"devKey": dev_key, "sessionId": session_id}


def check_no_secret_params(params: dict[str, Any] | None) -> None:
    if not params:
        return
    for name in params:
        if str(name).lower() in SECRET_PARAM_NAMES:
            raise ValueError(
                f"Query parameter {name!r} would put a secret in the URL; BILL takes it in a "
                "header (v3) or the form body (v2)."
            )


#: Which exception a malformed credential header becomes (so the caller can act on it: a key
#: with a line break in it needs a relink, not retries).
HEADER_ERRORS: dict[str, type[BillAPIError]] = {
    "devKey": InvalidDevKey,
    "sessionId": SessionInvalid,
    "apiToken": InvalidApiToken,
}
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x1f\x7f]|^\s|\s$")


def check_header_values(headers: dict[str, str] | None) -> None:
    """Refuse credentials HTTP cannot carry, naming the field and never echoing its value."""
    for name, value in (headers or {}).items():
        if isinstance(value, str) and _BAD_HEADER_VALUE.search(value):
            error = HEADER_ERRORS.get(name, BillAPIError)
            raise error(
                f"{error.default_message} The {name} contains spaces at its ends, line breaks or "
                "control characters, which BILL cannot receive."
            )


def check_relative_path(path: str) -> str:
    """Session headers must only ever go to BILL's base URL, never to another host."""
    if "://" in path or path.startswith("//"):
        raise ValueError(f"path must be relative to the BILL base URL, not {path!r}")
    return path if path.startswith("/") else "/" + path


class HttpClient:
    """A pooled HTTP session against one base URL, with timeouts and a total deadline per call.

    ``connect_timeout`` and ``read_timeout`` bound connecting and each socket read;
    ``call_deadline`` bounds the whole call, from connecting to the last byte of the answer
    (see ``deadline.py``). Each is a number of seconds or a ``timedelta``; ``None`` reads
    ``CONNECT_TIMEOUT``, ``READ_TIMEOUT`` and ``CALL_DEADLINE`` (default: connect + read).

    Not shared between threads: :func:`bill_integration.client.get_client` keeps one per
    thread. Subclass and override :meth:`send` to add logging or a proxy.
    """

    #: The largest answer read from BILL (decoded); a longer one is cut off, not buffered.
    max_response_bytes: int = MAX_RESPONSE_BYTES

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float | timedelta | None = None,
        read_timeout: float | timedelta | None = None,
        call_deadline: float | timedelta | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if connect_timeout is None or read_timeout is None:
            configured = configured_timeouts()
            connect_timeout = configured[0] if connect_timeout is None else connect_timeout
            read_timeout = configured[1] if read_timeout is None else read_timeout
        connect = as_seconds(connect_timeout, "CONNECT_TIMEOUT")
        read = as_seconds(read_timeout, "READ_TIMEOUT")
        self.base_url = base_url.rstrip("/")
        self.timeout: tuple[float, float] = (connect, read)
        self.call_deadline: float = (
            configured_call_deadline(connect, read)
            if call_deadline is None
            else as_seconds(call_deadline, "CALL_DEADLINE")
        )
        self.http = session or requests.Session()
        # No automatic retries: the caller decides (a login must not be replayed blindly).
        adapter = DeadlineAdapter(
            pool_connections=POOL_CONNECTIONS, pool_maxsize=POOL_MAXSIZE, max_retries=0
        )
        self.http.mount("https://", adapter)
        self.http.mount("http://", adapter)
        self.http.headers.update(
            {"Accept": "application/json", "User-Agent": "django-bill-integration"}
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def close(self) -> None:
        self.http.close()

    # Error reports (Django's 500 page, Sentry-style locals) must not show credentials: every
    # frame below a decorated call has all its local variables hidden.
    @sensitive_variables()
    def send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        data: Any = None,
        params: dict[str, Any] | None = None,
    ) -> requests.Response:
        """Send one request and read the whole answer within the call deadline.

        Network failures and a passed deadline raise :class:`TransientError`, an answer larger
        than :attr:`max_response_bytes` :class:`UnexpectedResponse` (no secrets in either).
        The returned response's body is already read (``response.content``).
        """
        check_no_secret_params(params)
        check_header_values(headers)
        url = self.base_url + check_relative_path(path)
        what = f"{method} {path}"
        deadline = Deadline(self.call_deadline)
        response: requests.Response | None = None
        try:
            with enforced(deadline):
                try:
                    response = self.http.request(
                        method,
                        url,
                        headers=headers,
                        json=json,
                        data=data,
                        params=params,
                        # A connect attempt cannot be shut down from outside: cap it instead.
                        timeout=(min(self.timeout[0], deadline.remaining()), self.timeout[1]),
                        allow_redirects=False,
                        stream=True,
                    )
                    self._read_body(response, deadline, what)
                except Exception as exc:
                    if deadline.passed:  # whatever a shut-down socket made the reader raise
                        raise _DeadlinePassed from None
                    if isinstance(exc, requests.RequestException | HTTPError | OSError):
                        raise _network_error(exc, what, self.base_url) from None
                    raise
            if deadline.fired:  # the watchdog cut the answer short at the very end
                raise _DeadlinePassed
        except _DeadlinePassed:
            raise CallDeadlineExceeded(
                f"{CallDeadlineExceeded.default_message} BILL did not finish answering {what} "
                f"within {self.call_deadline:g} s (CALL_DEADLINE)."
            ) from None
        finally:
            if response is not None:
                # Body read whole: the connection goes back to the pool; else it is closed.
                response.close()
        return response

    def _read_body(self, response: requests.Response, deadline: Deadline, what: str) -> None:
        """Read the answer in chunks, checking the deadline and the size cap between them."""
        limit = self.max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(response, what, limit)
        raw = response.raw
        # read1() returns what has arrived (urllib3 >= 2.3); read() waits for a full chunk,
        # and then only the watchdog interrupts a slow answer.
        read = getattr(raw, "read1", None) or raw.read
        chunks: list[bytes] = []
        size = 0
        while True:
            if deadline.passed:
                raise _DeadlinePassed
            chunk = read(READ_CHUNK_BYTES, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise _too_large(response, what, limit)
            chunks.append(chunk)
        response._content = b"".join(chunks)
        response._content_consumed = True  # type: ignore[attr-defined]  # requests' own flag; its stubs omit it


class _DeadlinePassed(Exception):
    """Internal: the call's deadline passed (turned into a TransientError by ``send``)."""


def _too_large(response: requests.Response, what: str, limit: int) -> UnexpectedResponse:
    return unexpected(
        f"BILL's answer to {what} was larger than {limit} bytes; it was not read.",
        http_status=response.status_code,
    )


def _network_error(exc: BaseException, what: str, base_url: str) -> BillIntegrationError:
    """The exception for a failed request, naming the failure's type but never its text."""
    name = type(exc).__name__
    if isinstance(
        exc,
        requests.exceptions.MissingSchema
        | requests.exceptions.InvalidSchema
        | requests.exceptions.InvalidURL,
    ):
        return ConfigurationError(
            f"The BILL base URL {base_url!r} is not a usable http(s) URL ({name}); check "
            "BILL_INTEGRATION['ENVIRONMENTS']."
        )
    if isinstance(exc, requests.Timeout | ReadTimeoutError | TimeoutError):
        return TransientError(
            f"{TransientError.default_message} BILL did not answer {what} in time ({name})."
        )
    if isinstance(exc, requests.ConnectionError | ProtocolError | ConnectionError):
        return TransientError(
            f"{TransientError.default_message} The connection to BILL failed during {what} "
            f"({name})."
        )
    return TransientError(f"{TransientError.default_message} {what} failed ({name}).")


def parse_json_body(response: requests.Response) -> Any:
    """The decoded JSON body; an empty body is ``None``; anything else not JSON is unexpected."""
    content = response.content
    if not content or not content.strip():
        return None
    try:
        return jsonlib.loads(content)
    except ValueError:
        content_type = response.headers.get("Content-Type", "no content type").split(";")[0]
        raise unexpected(
            f"The answer was not JSON (HTTP {response.status_code}, {content_type}).",
            http_status=response.status_code,
        ) from None


def require_bool(
    body: Any, key: str, *, http_status: int, what: str, default: bool | None = None
) -> Any:
    """``body[key]`` as a boolean (``default`` when absent; ``None``: it must be there)."""
    present = isinstance(body, dict) and key in body
    if not present and default is not None:
        return default
    value = body.get(key) if present else None
    if not isinstance(value, bool):
        raise unexpected(f"{what}: field {key!r} is not a boolean.", http_status=http_status)
    return value


def require_str(body: Any, key: str, *, http_status: int, what: str, optional: bool = False) -> Any:
    """``body[key]`` as a non-empty string, or an :class:`UnexpectedResponse` naming the field."""
    if not isinstance(body, dict):
        raise unexpected(f"{what}: the answer was not a JSON object.", http_status=http_status)
    value = body.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise unexpected(
            f"{what}: field {key!r} is missing or not a string.", http_status=http_status
        )
    return value
