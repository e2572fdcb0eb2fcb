"""What BILL decides, not the project: BILL's published session timeout and rate limits.

These are facts about BILL's API, so they are constants rather than settings: a project that
"changed" one would only make the app disagree with BILL. Each carries the BILL documentation
page that states it. The settings that depend on them (``SESSION_SAFETY_MARGIN``,
``LOGIN_BUDGET_PER_HOUR``, ...) live in :mod:`bill_integration.conf`.
"""

from __future__ import annotations

from datetime import timedelta

#: BILL ends an API session after 35 minutes without a call; every call resets the timer
#: (v3 and v2 alike).
#: https://developer.bill.com/reference/login
#: https://developer.bill.com/v2/docs/api-login-best-practices
SESSION_IDLE_TIMEOUT = timedelta(minutes=35)

#: Requests one developer key may have in flight per organization; the next one fails with
#: BDC_1322 until one completes.
#: https://developer.bill.com/docs/api-rate-limits
MAX_CONCURRENT_PER_ORGANIZATION = 3

#: Logins per developer key per hour (``POST /v3/login``; v2 ``Login.json`` and
#: ``ListOrgs.json``); past it BILL answers BDC_1144 until the next hour.
#: https://developer.bill.com/docs/api-rate-limits
#: https://developer.bill.com/v2/docs/api-rate-limits
MAX_LOGINS_PER_HOUR = 200

#: API calls per developer key per hour, all endpoints together; past it BILL answers BDC_1144
#: and "all subsequent API requests must wait until the beginning of the next hour".
#: https://developer.bill.com/docs/api-rate-limits
MAX_CALLS_PER_HOUR = 20_000

#: How long BILL trusts a device after a confirmed MFA code with "remember me": the
#: ``rememberMeId`` (v2 ``mfaId``) "expires in 30 days".
#: https://developer.bill.com/reference/login
#: https://developer.bill.com/changelog/2024-08-02-v3-api-mfa-related-improvements
MFA_TRUST_LIFETIME = timedelta(days=30)

#: Text messages (MFA challenges) BILL sends per minute; past it BILL refuses.
#: https://developer.bill.com/docs/api-rate-limits
MAX_TEXTS_PER_MINUTE = 5
