"""The emulator's HTTP face: BILL v3, v2 and Spend & Expense, plus ``/_emulator/`` control.

Paths (relative to ``EmulatorServer.url``):

* v3 under ``/connect`` (``server.v3_base``): ``POST /v3/login``, ``GET /v3/login/session``,
  ``GET /v3/login/organizations``, ``POST /v3/logout``, ``GET /v3/health``, ``GET /v3/vendors``
  (always empty), and MFA and payments (``mfa_routes.py``: ``/v3/mfa/...``, ``POST
  /v3/payments``, which answers ``BDC_1361`` unless the session is MFA-trusted).
* Spend & Expense under the same base: ``GET /v3/spend/users/current``, ``GET /v3/spend/budgets``.
* v2 under ``/api/v2`` (``server.v2_base``): ``Login.json``, ``Logout.json``,
  ``GetSessionInfo.json``, ``ListOrgs.json``, ``List/Vendor.json`` (always empty), and
  ``MFAChallenge.json``, ``MFAAuthenticate.json``, ``MFAStatus.json``, ``PayBills.json``.
* Control under ``/_emulator/``: ``accounts`` (GET; POST one account object, or an accounts
  file's whole document: see the package docstring), ``accounts/password`` (POST),
  ``clock`` (GET; POST ``{"advance": s}`` or ``{"offset": s}``), ``faults`` (GET, POST, DELETE),
  ``counters`` (GET ``?organization_id=&dev_key=``), ``sessions`` (GET), ``sessions/invalidate``
  (POST), ``limits`` (POST), ``reset`` (POST); ``mfa/code``, ``mfa/phones``, ``logins``.

Bodies follow BILL's documented examples field for field: v3 errors are a JSON array of ``{timestamp, code,
severity, category, message}`` with HTTP 4xx/5xx; v2 always answers HTTP 200 with the
``response_status`` envelope, except an unknown path (HTTP 404, ``BDC_1121``).
Choices where BILL is UNCONFIRMED: v3 login failures answer 400; v3 rate limits answer 429;
missing auth headers on v3 answer 400 with a code-less validation error; v2 without ``devKey``
answers ``BDC_1102`` "Developer key must be specified."; a wrong ``orgId`` at login answers
``BDC_1101`` with BILL's "Invalid parameter value" message.

The server never imports Django; it runs inside tests, inside ``manage.py bill_emulator``, or
from plain Python.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from .mfa_routes import CONTROL_MFA_ROUTES, V2_MFA_ROUTES, V3_MFA_ROUTES
from .oauth_routes import OAUTH_TOKEN_PATH, oauth_token
from .state import (
    Account,
    EmulatedError,
    EmulatorState,
    Fault,
    Session,
    accounts_document,
    organizations,
)

EMULATOR_VERSION = "1.0"
V3_PREFIX = "/connect"
V2_PREFIX = "/api/v2"
CONTROL_PREFIX = "/_emulator"

GATEWAY_PAGE = (
    "<html>\r\n<head><title>{status} Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    "<center><h1>{status} Service Temporarily Unavailable</h1></center>\r\n</body>\r\n</html>\r\n"
)


def v3_timestamp(moment: datetime) -> str:
    """``2026-12-25T00:00:00.000+00:00`` (https://developer.bill.com/v3/docs/common-api-error-codes)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+00:00"


class _Dropped(Exception):
    """The connection was closed on purpose (hang/reset fault); send nothing."""


class EmulatorHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "BillEmulator/" + EMULATOR_VERSION
    server: _EmulatorHTTPServer
    _drip: dict[str, Any] | None = None  # set by a "drip" fault for the current request
    _headers_buffer: list[bytes]  # BaseHTTPRequestHandler's own (send_header fills it)

    # --- plumbing ------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    @property
    def state(self) -> EmulatorState:
        return self.server.state

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        self._drip = None
        url = urlsplit(self.path)
        self.url_path = url.path
        self.query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length > 0 else b""
        try:
            if self.url_path.startswith(CONTROL_PREFIX + "/"):
                self._control()
            elif self.url_path.startswith(V2_PREFIX + "/"):
                self._v2()
            elif self.url_path == OAUTH_TOKEN_PATH:
                oauth_token(self)
            else:
                self._v3()
        except _Dropped:
            self.close_connection = True

    def _send(
        self, status: int, payload: Any, content_type: str = "application/json;charset=UTF-8"
    ) -> None:
        if isinstance(payload, bytes | str):
            raw = payload.encode() if isinstance(payload, str) else payload
        else:
            raw = b"" if payload is None else json.dumps(payload).encode()
        if self._drip is not None:
            self._send_dripping(status, raw, content_type, self._drip)
            return
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        # Headers and body in one write: two small writes meet Nagle's algorithm and the
        # client's delayed ACK and cost 40 ms per request.
        self._headers_buffer.append(b"\r\n" + raw)
        self.flush_headers()

    def _send_dripping(
        self, status: int, raw: bytes, content_type: str, params: dict[str, Any]
    ) -> None:
        """The "drip" fault: the same answer, one byte at a time (a slow link or proxy).

        Leading blanks stretch the body to last ``seconds``; JSON allows them, so a client
        patient enough still gets a valid answer. A reset of the state stops the drip.
        """
        interval = float(params.get("interval", 1.0))
        seconds = float(params.get("seconds", 30.0))
        body = b" " * max(0, int(seconds / interval) - len(raw)) + raw
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        head = b"".join(self._headers_buffer) + b"\r\n"
        self._headers_buffer = []
        if params.get("headers"):
            slow = head + body
        else:
            self.wfile.write(head)
            slow = body
        wake = self.state.wake
        try:
            for position in range(len(slow)):
                if wake.wait(interval):
                    self._drop(reset=False)
                self.wfile.write(slow[position : position + 1])
        except OSError:  # the client hung up (its deadline passed): stop dripping
            self.close_connection = True

    def _drop(self, *, reset: bool) -> None:
        """Close the connection without an answer (TCP RST if ``reset``)."""
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.connection.close()
        raise _Dropped

    def _apply_fault(self, fault: Fault | None, api: str) -> None:
        """Misbehave as the fault says; returns normally if the request should go on."""
        if fault is None:
            return
        params = fault.params
        wake = self.state.wake
        if fault.kind == "latency":
            wake.wait(float(params.get("seconds", 1.0)))
        elif fault.kind == "hang":
            wake.wait(float(params.get("seconds", 30.0)))
            self._drop(reset=False)
        elif fault.kind == "reset":
            self._drop(reset=True)
        elif fault.kind == "drop":
            self._drop(reset=False)
        elif fault.kind == "status":
            status = int(params.get("status", 503))
            if params.get("body") == "json":
                raise EmulatedError("BDC_1001", status=status, category="SERVER")
            self._send(status, GATEWAY_PAGE.format(status=status), "text/html")
            raise _Answered
        elif fault.kind == "error":
            code = params.get("code", "BDC_1001")
            raise EmulatedError(code, params.get("message"), status=params.get("status"))
        elif fault.kind == "drip":
            self._drip = params  # _send() answers slowly

    # --- v3 and Spend ------------------------------------------------------------------------

    def _v3_error(self, error: EmulatedError) -> None:
        item: dict[str, Any] = {"timestamp": v3_timestamp(self.state.now())}
        if error.code:
            item["code"] = error.code
        item.update({"severity": "ERROR", "category": error.category, "message": error.message})
        self._send(error.status, [item])

    def _v3(self) -> None:
        path = (
            self.url_path[len(V3_PREFIX) :] if self.url_path.startswith(V3_PREFIX + "/") else None
        )
        route = V3_ROUTES.get((self.command, path)) if path else None
        if route is None:
            self._v3_error(EmulatedError("BDC_1121"))
            return
        kind, handler = route
        try:
            self._run(kind, handler, api="v3")
        except EmulatedError as error:
            self._v3_error(error)
        except _Answered:
            pass

    def _json_body(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            data = json.loads(self.body)
        except ValueError:
            raise EmulatedError(
                None, "Request body is not valid JSON.", status=400, category="REQUEST"
            ) from None
        if not isinstance(data, dict):
            raise EmulatedError(
                None, "Request body must be a JSON object.", status=400, category="REQUEST"
            )
        return data

    def _run(self, kind: str, handler: Callable[..., None], *, api: str) -> None:
        """Identify the caller, admit it under the limits, apply faults, then answer."""
        state = self.state
        if kind == "public":
            self._apply_fault(state.take_fault(None, None, self.url_path), api)
            handler(self)
            return
        if kind == "spend":
            account = state.account_for_token(self.headers.get("apiToken"))
            org = account.organization_id if account else None
            key = account.dev_key if account else None
            self._apply_fault(state.take_fault(org, key, self.url_path), api)
            if account is not None:
                state.spend_call(account)  # 60 a minute per token
            handler(self, account)
            return
        bearer = self.headers.get("Authorization", "")
        if kind == "session" and api == "v3" and bearer.lower().startswith("bearer "):
            # OAuth: the access token is the only credential (no devKey, no sessionId).
            session = state.authenticate_bearer(bearer[7:].strip())
            self._apply_fault(state.take_fault(session.organization_id, None, self.url_path), api)
            state.count(None, session.organization_id, calls=1)
            handler(self, session)
            return
        if kind in ("login", "list_orgs"):
            fields = self._login_fields(api)
            dev_key, org = fields["dev_key"], fields["organization_id"]
        else:
            dev_key, session_id = self._session_fields(api)
            known = state.peek_session(session_id)
            org = known.account.organization_id if known and known.dev_key == dev_key else None
        slot = state.acquire(dev_key, org, login=kind in ("login", "list_orgs"))
        try:
            self._apply_fault(state.take_fault(org, dev_key, self.url_path), api)
            if kind in ("login", "list_orgs"):
                handler(self, fields)
            else:
                handler(self, state.authenticate(session_id, dev_key))
        finally:
            state.release(slot)

    def _login_fields(self, api: str) -> dict[str, Any]:
        if api == "v3":
            body = self._json_body()
            names = {
                "username": "username",
                "password": "password",
                "organizationId": "organization_id",
                "devKey": "dev_key",
            }
            console = body.get("consoleApiToken")
            if isinstance(console, str) and console:  # Accountant Console: no password
                if "password" in body:  # strict on purpose: a console login must send none
                    raise EmulatedError(
                        None,
                        "password: not allowed with consoleApiToken",
                        status=400,
                        category="REQUEST",
                    )
                names.pop("password")
            fields = {ours: body.get(theirs) for theirs, ours in names.items()}
            for theirs, ours in names.items():
                if not isinstance(fields[ours], str) or not fields[ours]:
                    raise EmulatedError(
                        None, f"{theirs}: must not be null", status=400, category="REQUEST"
                    )
            # Optional: an MFA remember-me id with its device gives a trusted session.
            fields["remember_me_id"], fields["device"] = (
                body.get("rememberMeId"),
                body.get("device"),
            )
            if "password" not in names:
                fields["password"], fields["console_token"] = "", console
            return fields
        form = self._form()
        fields = {
            "username": form.get("userName", ""),
            "password": form.get("password", ""),
            "organization_id": form.get("orgId", ""),
            "dev_key": form.get("devKey", ""),
            "remember_me_id": form.get("mfaId"),
            "device": form.get("deviceId"),
        }
        if not fields["dev_key"]:
            raise EmulatedError("BDC_1102", "Developer key must be specified.")
        return fields

    def _session_fields(self, api: str) -> tuple[str, str]:
        if api == "v3":
            dev_key, session_id = self.headers.get("devKey"), self.headers.get("sessionId")
            for name, value in (("devKey", dev_key), ("sessionId", session_id)):
                if not value:
                    raise EmulatedError(
                        None, f"{name}: header is required", status=400, category="REQUEST"
                    )
            return dev_key, session_id  # type: ignore[return-value]
        form = self._form()
        if not form.get("devKey"):
            raise EmulatedError("BDC_1102", "Developer key must be specified.")
        if not form.get("sessionId"):
            raise EmulatedError("BDC_1109", "Session is invalid. Please log in.")
        return form["devKey"], form["sessionId"]

    def v3_health(self) -> None:
        self._send(
            200,
            {
                "appId": "bill-emulator",
                "appEnv": "emulator",
                "appVersion": EMULATOR_VERSION,
                "bdcRegion": "local",
            },
        )

    def v3_login(self, fields: dict[str, str]) -> None:
        session = self.state.login(api="v3", **fields)
        self._send(
            200,
            {
                "organizationId": session.organization_id,
                "sessionId": session.session_id,
                "trusted": session.trusted,
                "userId": session.account.user_id,
            },
        )

    def v3_session(self, session: Session) -> None:
        self.state.count(session.dev_key, session.account.organization_id, session_info=1)
        self._send(
            200,
            {
                "organizationId": session.organization_id or session.account.organization_id,
                "userId": session.account.user_id,
                "mfaStatus": self.state.mfa_status_of(session),
                "mfaBypass": session.account.mfa_bypass,
            },
        )

    def v3_organizations(self, session: Session) -> None:
        # Field names UNCONFIRMED (https://developer.bill.com/reference/listallorganizations): id/name per result.
        orgs = [
            {"id": o["organizationId"], "name": o["name"]} for o in organizations(session.account)
        ]
        self._send(200, {"results": orgs, "nextPage": None, "prevPage": None})

    def v3_logout(self, session: Session) -> None:
        self.state.logout(session)
        self._send(200, None)

    def v3_vendors(self, session: Session) -> None:
        self._send(200, {"results": [], "nextPage": None, "prevPage": None})

    def spend_current_user(self, account: Account | None) -> None:
        account = self._spend_account(account)
        self._send(
            200,
            {
                "id": account.spend_user_id,
                "uuid": account.spend_uuid,
                "firstName": account.first_name,
                "lastName": account.last_name,
                "email": account.username,
                "receiptEmail": account.username,
                "retired": False,
                "useCompanyMailingAddress": False,
                "smsOptIn": False,
                "hasDateOfBirth": False,
                "role": account.spend_role,
                "createdTime": "2015-05-10T01:34:15.061Z",
            },
        )

    def spend_budgets(self, account: Account | None) -> None:
        self._spend_account(account)
        self._send(200, {"results": [], "nextPage": None, "prevPage": None})

    def _spend_account(self, account: Account | None) -> Account:
        # Missing header 400, wrong token 401 (https://developer.bill.com/docs/spend-expense-api); body shape UNCONFIRMED.
        if not self.headers.get("apiToken"):
            raise EmulatedError(
                None, "apiToken: header is required", status=400, category="REQUEST"
            )
        if account is None:
            raise EmulatedError(None, "Invalid API token.", status=401, category="REQUEST")
        self.state.count(account.dev_key, account.organization_id, spend=1)
        return account

    # --- v2 ----------------------------------------------------------------------------------

    def _form(self) -> dict[str, str]:
        parsed = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in parsed.items()}

    def _v2_send(self, data: Any) -> None:
        self._send(
            200, {"response_status": 0, "response_message": "Success", "response_data": data}
        )

    def _v2_error(self, error: EmulatedError, status: int = 200) -> None:
        message = error.message
        if error.code == "BDC_1109":
            message = "Session is invalid. Please log in."  # v2's text has one space
        self._send(
            status,
            {
                "response_status": 1,
                "response_message": "Error",
                "response_data": {"error_code": error.code or "BDC_1001", "error_message": message},
            },
        )

    def _v2(self) -> None:
        route = V2_ROUTES.get(self.url_path[len(V2_PREFIX) :]) if self.command == "POST" else None
        if route is None:
            self._v2_error(EmulatedError("BDC_1121"), status=404)
            return
        kind, handler = route
        try:
            self._run(kind, handler, api="v2")
        except EmulatedError as error:
            # v2 reports errors inside HTTP 200; only a forced 5xx fault keeps its status.
            self._v2_error(error, status=error.status if error.status >= 500 else 200)
        except _Answered:
            pass

    def v2_login(self, fields: dict[str, str]) -> None:
        session = self.state.login(api="v2", **fields)
        host = (
            self.headers.get("Host")
            or f"{self.server.server_address[0]}:{self.server.server_address[1]}"  # type: ignore[str-bytes-safe]  # a TCP server's host is a str
        )
        self._v2_send(
            {
                "sessionId": session.session_id,
                "orgId": session.account.organization_id,
                "apiEndPoint": f"http://{host}{V2_PREFIX}",
                "usersId": session.account.user_id,
            }
        )

    def v2_list_orgs(self, fields: dict[str, str]) -> None:
        if not self.state.is_dev_key(fields["dev_key"]):
            raise EmulatedError("BDC_1102")
        accounts = self.state.orgs_for(fields["username"], fields["password"])
        self._v2_send(
            [
                {"orgId": org["organizationId"], "orgName": org["name"]}
                for a in accounts
                for org in organizations(a)
            ]
        )

    def v2_session(self, session: Session) -> None:
        self.state.count(session.dev_key, session.account.organization_id, session_info=1)
        self._v2_send(
            {"organizationId": session.account.organization_id, "userId": session.account.user_id}
        )

    def v2_logout(self, session: Session) -> None:
        self.state.logout(session)
        self._v2_send({})

    def v2_list_vendors(self, session: Session) -> None:
        self._v2_send([])

    # --- control -----------------------------------------------------------------------------

    def _control(self) -> None:
        route = CONTROL_ROUTES.get((self.command, self.url_path[len(CONTROL_PREFIX) :]))
        if route is None:
            self._send(404, {"error": f"No control endpoint {self.command} {self.url_path}."})
            return
        try:
            body = json.loads(self.body) if self.body else {}
            # A list only where an accounts file's bare list of accounts is accepted.
            if not isinstance(body, dict) and not (
                isinstance(body, list) and route is _add_accounts
            ):
                raise TypeError("The request body must be a JSON object.")
            status, payload = route(self.state, body, self.query)
        except (ValueError, TypeError) as exc:
            self._send(400, {"error": str(exc)})
            return
        self._send(status, payload)


class _Answered(Exception):
    """The fault already sent an answer."""


V3_ROUTES: dict[tuple[str, str], tuple[str, Callable[..., None]]] = {
    ("GET", "/v3/health"): ("public", EmulatorHandler.v3_health),
    ("POST", "/v3/login"): ("login", EmulatorHandler.v3_login),
    ("GET", "/v3/login/session"): ("session", EmulatorHandler.v3_session),
    ("GET", "/v3/login/organizations"): ("session", EmulatorHandler.v3_organizations),
    ("POST", "/v3/logout"): ("session", EmulatorHandler.v3_logout),
    ("GET", "/v3/vendors"): ("session", EmulatorHandler.v3_vendors),
    ("GET", "/v3/spend/users/current"): ("spend", EmulatorHandler.spend_current_user),
    ("GET", "/v3/spend/budgets"): ("spend", EmulatorHandler.spend_budgets),
    **V3_MFA_ROUTES,
}

V2_ROUTES: dict[str, tuple[str, Callable[..., None]]] = {
    "/Login.json": ("login", EmulatorHandler.v2_login),
    "/ListOrgs.json": ("list_orgs", EmulatorHandler.v2_list_orgs),
    "/GetSessionInfo.json": ("session", EmulatorHandler.v2_session),
    "/Logout.json": ("session", EmulatorHandler.v2_logout),
    "/List/Vendor.json": ("session", EmulatorHandler.v2_list_vendors),
    **V2_MFA_ROUTES,
}


def _filters(body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
    source = {**query, **body}
    return {
        "organization_id": source.get("organization_id") or None,
        "dev_key": source.get("dev_key") or None,
    }


def _clock(state: EmulatorState, body: dict[str, Any], query: dict[str, str]) -> tuple[int, Any]:
    if "advance" in body:
        state.advance(float(body["advance"]))
    elif "offset" in body:
        state.set_offset(float(body["offset"]))
    return 200, {"now": state.now().isoformat(), "offset": state.clock.offset}


def _add_fault(
    state: EmulatorState, body: dict[str, Any], query: dict[str, str]
) -> tuple[int, Any]:
    body = dict(body)
    kind = body.pop("kind", None)
    if not kind:
        raise ValueError("kind is required.")
    return 201, {"id": state.set_fault(kind, **body)}


def _clear_faults(
    state: EmulatorState, body: dict[str, Any], query: dict[str, str]
) -> tuple[int, Any]:
    state.clear_faults()
    return 200, {"faults": []}


def _reset(state: EmulatorState, body: dict[str, Any], query: dict[str, str]) -> tuple[int, Any]:
    state.reset()
    return 200, {"reset": True}


def _add_accounts(state: EmulatorState, body: Any, query: dict[str, str]) -> tuple[int, Any]:
    """One account object (answered as that account), or an accounts file's whole document.

    ``{"accounts": [...]}`` or a bare list, as ``bill_emulator --accounts FILE`` reads: the
    answer is then ``{"accounts": [...]}`` with every account added.
    """
    if isinstance(body, dict) and "accounts" not in body:
        return 201, state.add_account(**body).to_dict()
    added = state.load_accounts(accounts_document(body, "POST /_emulator/accounts"))
    return 201, {"accounts": [account.to_dict() for account in added]}


def _password(state: EmulatorState, body: dict[str, Any], query: dict[str, str]) -> tuple[int, Any]:
    state.change_password(body["username"], body["password"])
    return 200, {"changed": True}


# The body is a JSON object, or a bare list where _add_accounts accepts one.
CONTROL_ROUTES: dict[
    tuple[str, str], Callable[[EmulatorState, Any, dict[str, str]], tuple[int, Any]]
] = {
    ("GET", "/accounts"): lambda s, b, q: (200, {"accounts": [a.to_dict() for a in s.accounts()]}),
    ("POST", "/accounts"): _add_accounts,
    ("POST", "/accounts/password"): _password,
    ("GET", "/clock"): _clock,
    ("POST", "/clock"): _clock,
    ("GET", "/faults"): lambda s, b, q: (200, {"faults": s.faults()}),
    ("POST", "/faults"): _add_fault,
    ("DELETE", "/faults"): _clear_faults,
    ("GET", "/counters"): lambda s, b, q: (200, s.counters(**_filters(b, q))),
    ("GET", "/sessions"): lambda s, b, q: (200, {"active": s.active_sessions(**_filters(b, q))}),
    ("POST", "/sessions/invalidate"): lambda s, b, q: (
        200,
        {"invalidated": s.invalidate_sessions(**_filters(b, q))},
    ),
    ("POST", "/limits"): lambda s, b, q: (200, s.set_limits(**b)),
    ("POST", "/reset"): _reset,
    **CONTROL_MFA_ROUTES,
}


class _EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # benchmarks open many connections at once

    def __init__(self, address: tuple[str, int], state: EmulatorState, verbose: bool) -> None:
        self.state = state
        self.verbose = verbose
        super().__init__(address, EmulatorHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (a test's read timeout) is normal here.
        if self.verbose:
            super().handle_error(request, client_address)


class EmulatorServer:
    """A running emulator: ``EmulatorServer(port=0).start()``; ``stop()`` when done.

    ``port=0`` picks a free port; ``url``, ``v3_base`` and ``v2_base`` say where it is.
    ``state`` is the in-process control (same methods as ``EmulatorControl(url)``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        state: EmulatorState | None = None,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.state = state or EmulatorState()
        self.verbose = verbose
        self._httpd: _EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def bind(self) -> EmulatorServer:
        if self._httpd is None:
            self._httpd = _EmulatorHTTPServer(
                (self.host, self.requested_port), self.state, self.verbose
            )
        return self

    def start(self) -> EmulatorServer:
        """Serve in a daemon thread and return at once."""
        self.bind()
        assert self._httpd is not None
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"bill-emulator-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (``manage.py bill_emulator``)."""
        self.bind()
        assert self._httpd is not None
        try:
            self._httpd.serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        if self._httpd is None:
            return
        self.state.wake.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("The emulator is not started.")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def v3_base(self) -> str:
        return self.url + V3_PREFIX

    @property
    def v2_base(self) -> str:
        return self.url + V2_PREFIX

    def __repr__(self) -> str:
        where = self.url if self._httpd is not None else "not started"
        return f"EmulatorServer({where})"
