"""The HTTP layer shared by every BILL client: one pooled ``requests.Session``, timeouts.

Network failures become :class:`TransientError` here, so the version-specific modules only
deal with answers. Secrets travel in headers or bodies only; :func:`check_no_secret_params`
refuses them in a query string (BILL's own advice, bill-api.md §1.2).
"""

from __future__ import annotations

import json as jsonlib
import re
from typing import Any

import requests
from django.views.decorators.debug import sensitive_variables
from requests.adapters import HTTPAdapter

from ..exceptions import (
    BillAPIError,
    ConfigurationError,
    InvalidApiToken,
    InvalidDevKey,
    SessionInvalid,
    TransientError,
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
    """A pooled HTTP session with explicit (connect, read) timeouts against one base URL.

    Not shared between threads: :func:`bill_integration.client.get_client` keeps one per
    thread. Subclass and override :meth:`send` to add logging or a proxy.
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if connect_timeout is None or read_timeout is None:
            from ..conf import bill_settings

            connect_timeout = (
                bill_settings.CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
            )
            read_timeout = bill_settings.READ_TIMEOUT if read_timeout is None else read_timeout
        self.base_url = base_url.rstrip("/")
        self.timeout: tuple[float, float] = (float(connect_timeout), float(read_timeout))
        self.http = session or requests.Session()
        # No automatic retries: the caller decides (a login must not be replayed blindly).
        adapter = HTTPAdapter(
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
        """Send one request; network failures raise :class:`TransientError` (no secrets in it)."""
        check_no_secret_params(params)
        check_header_values(headers)
        url = self.base_url + check_relative_path(path)
        try:
            return self.http.request(
                method,
                url,
                headers=headers,
                json=json,
                data=data,
                params=params,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except (
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidURL,
        ) as exc:
            raise ConfigurationError(
                f"The BILL base URL {self.base_url!r} is not a usable http(s) URL "
                f"({type(exc).__name__}); check BILL_INTEGRATION['ENVIRONMENTS']."
            ) from None
        except requests.Timeout as exc:
            raise TransientError(
                f"{TransientError.default_message} BILL did not answer {method} {path} in time "
                f"({type(exc).__name__}).",
            ) from None
        except requests.ConnectionError as exc:
            raise TransientError(
                f"{TransientError.default_message} The connection to BILL failed during "
                f"{method} {path} ({type(exc).__name__}).",
            ) from None
        except requests.RequestException as exc:
            raise TransientError(
                f"{TransientError.default_message} {method} {path} failed ({type(exc).__name__}).",
            ) from None


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
