"""The emulator's MFA and payment endpoints (v3, v2) and their control routes.

v3 under ``/connect``: ``GET /v3/mfa/phones``, ``POST /v3/mfa/challenge``,
``POST /v3/mfa/challenge/validate``, ``POST /v3/mfa/step-up``, and the protected operations
``POST /v3/payments`` and ``POST /v3/payments/bulk``. v2 under ``/api/v2``: ``MFAChallenge.json``,
``MFAAuthenticate.json``, ``MFAStatus.json`` and the protected ``PayBills.json``.
Control under ``/_emulator/``: ``mfa/code`` (GET ``?username=``), ``mfa/phones`` (POST
``{"username", "phones"}``), ``logins`` (GET ``?organization_id=&username=``).

Each handler is called as ``handler(request_handler, session)`` by ``server.py``'s route
tables; the rules (and the choices where BILL is UNCONFIRMED) are in ``mfa.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from . import ids
from .mfa import CHOICES, MfaError
from .state import EmulatedError, EmulatorState, Session


@contextmanager
def _as_bill_error() -> Iterator[None]:
    try:
        yield
    except MfaError as error:
        raise EmulatedError(error.code, error.message, status=error.status) from None


def _invalid(message: str, api: str) -> EmulatedError:
    """A refused parameter: v3's code-less validation error, v2's BDC_1002."""
    if api == "v2":
        return EmulatedError("BDC_1002", message)
    return EmulatedError(None, message, status=400, category="REQUEST")


def _flag(value: Any, name: str, api: str) -> bool:
    """A JSON boolean, or the strings "true"/"false" (BILL's Postman sends ``"false"``)."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _invalid(f"{name}: must be a boolean", api)


def _v2_data(handler: Any) -> dict[str, Any]:
    raw = handler._form().get("data") or "{}"
    try:
        data = json.loads(raw)
    except ValueError:
        raise EmulatedError("BDC_1002", "Unknown error occurred.") from None
    if not isinstance(data, dict):
        raise EmulatedError("BDC_1002", "Unknown error occurred.")
    return data


def _text(data: dict[str, Any], name: str, api: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise _invalid(f"{name}: must not be null", api)
    return value


def _challenge(handler: Any, session: Session, use_backup: bool) -> str:
    state: EmulatorState = handler.state
    with _as_bill_error():
        challenge_id = state.mfa.challenge(
            session.account, session.dev_key, use_backup=use_backup, now=state.now()
        )
    state.count(session.dev_key, session.account.organization_id, mfa_texts=1)
    return challenge_id


def _validate(handler: Any, session: Session, data: dict[str, Any], token: str, device: str) -> Any:
    state: EmulatorState = handler.state
    with _as_bill_error():
        remembered = state.mfa.validate(
            session.account,
            challenge_id=data.get("challengeId"),
            token=token,
            device=device,
            remember_me=_flag(data.get("rememberMe"), "rememberMe", session.api),
            api=session.api,
            now=state.now(),
        )
    session.trusted = True
    return remembered


def _payment_id() -> str:
    return ids.entity_id("stp")


# --- v3 -------------------------------------------------------------------------------------------


def v3_phones(handler: Any, session: Session) -> None:
    handler._send(200, {"results": handler.state.mfa.phones(session.account)})


def v3_challenge(handler: Any, session: Session) -> None:
    body = handler._json_body()
    challenge_id = _challenge(handler, session, _flag(body.get("useBackup"), "useBackup", "v3"))
    handler._send(200, {"challengeId": challenge_id})


def v3_validate(handler: Any, session: Session) -> None:
    body = handler._json_body()
    token, device = _text(body, "token", "v3"), _text(body, "device", "v3")
    _text(body, "challengeId", "v3")
    remembered = _validate(handler, session, body, token, device)
    handler._send(200, {"rememberMeId": remembered} if remembered else {})


def v3_step_up(handler: Any, session: Session) -> None:
    body = handler._json_body()
    state: EmulatorState = handler.state
    trusted = state.mfa.trusts(
        session.account, body.get("rememberMeId"), body.get("device"), state.now()
    )
    if trusted:
        session.trusted = True
    handler._send(200, {"trusted": trusted})


def v3_payment(handler: Any, session: Session) -> None:
    handler.state.protected(session)
    body = handler._json_body()
    handler._send(
        200,
        {
            "id": _payment_id(),
            "billId": body.get("billId"),
            "amount": body.get("amount"),
            "status": "SCHEDULED",
        },
    )


def v3_bulk_payment(handler: Any, session: Session) -> None:
    handler.state.protected(session)
    body = handler._json_body()
    payments = body.get("payments") if isinstance(body.get("payments"), list) else []
    handler._send(200, {"payments": [{"id": _payment_id()} for _ in payments] or []})


# --- v2 -------------------------------------------------------------------------------------------


def v2_challenge(handler: Any, session: Session) -> None:
    data = _v2_data(handler)
    use_backup = _flag(data.get("useBackup"), "useBackup", "v2")
    handler._v2_send({"challengeId": _challenge(handler, session, use_backup)})


def v2_authenticate(handler: Any, session: Session) -> None:
    data = _v2_data(handler)
    token, device = _text(data, "token", "v2"), _text(data, "deviceId", "v2")
    remembered = _validate(handler, session, data, token, device)
    handler._v2_send({"mfaId": remembered} if remembered else {})


def v2_status(handler: Any, session: Session) -> None:
    data = _v2_data(handler)
    state: EmulatorState = handler.state
    trusted = state.mfa.trusts(
        session.account, data.get("mfaId"), data.get("deviceId"), state.now()
    )
    handler._v2_send({"isTrusted": trusted})


def v2_pay_bills(handler: Any, session: Session) -> None:
    handler.state.protected(session)
    data = _v2_data(handler)
    bills = cast(list[Any], data["billPays"]) if isinstance(data.get("billPays"), list) else []
    handler._v2_send({"sentPay": {"id": _payment_id(), "count": len(bills)}})


V3_MFA_ROUTES: dict[tuple[str, str], tuple[str, Callable[..., None]]] = {
    ("GET", "/v3/mfa/phones"): ("session", v3_phones),
    ("POST", "/v3/mfa/challenge"): ("session", v3_challenge),
    ("POST", "/v3/mfa/challenge/validate"): ("session", v3_validate),
    ("POST", "/v3/mfa/step-up"): ("session", v3_step_up),
    ("POST", "/v3/payments"): ("session", v3_payment),
    ("POST", "/v3/payments/bulk"): ("session", v3_bulk_payment),
}

V2_MFA_ROUTES: dict[str, tuple[str, Callable[..., None]]] = {
    "/MFAChallenge.json": ("session", v2_challenge),
    "/MFAAuthenticate.json": ("session", v2_authenticate),
    "/MFAStatus.json": ("session", v2_status),
    "/PayBills.json": ("session", v2_pay_bills),
}


def _one(source: dict[str, Any], name: str) -> str | None:
    value = source.get(name)
    return str(value) if value else None


CONTROL_MFA_ROUTES: dict[
    tuple[str, str], Callable[[EmulatorState, dict[str, Any], dict[str, str]], tuple[int, Any]]
] = {
    ("GET", "/mfa"): lambda s, b, q: (200, {"choices": CHOICES}),
    ("GET", "/mfa/code"): lambda s, b, q: (200, s.mfa_code(str({**q, **b}.get("username", "")))),
    ("POST", "/mfa/phones"): lambda s, b, q: (
        200,
        {"phones": s.set_mfa_phones(str(b.get("username", "")), b.get("phones"))},
    ),
    ("GET", "/logins"): lambda s, b, q: (
        200,
        {
            "logins": s.login_records(
                organization_id=_one({**q, **b}, "organization_id"),
                username=_one({**q, **b}, "username"),
            )
        },
    ),
}
