"""Deprecated alias of :mod:`bill_integration.log_redaction` (renamed: it shadowed ``logging``).

``LOGGING`` configurations that name ``bill_integration.logging.RedactSecretsFilter`` keep
working for one release, with a ``DeprecationWarning``; name
``bill_integration.log_redaction.RedactSecretsFilter`` instead. Removed in 0.3.
"""

import warnings

from .log_redaction import *  # noqa: F403
from .log_redaction import RedactSecretsFilter, install, redact, register_secret  # noqa: F401

warnings.warn(
    "bill_integration.logging is renamed bill_integration.log_redaction; update your LOGGING "
    "setting (the old name goes away in 0.3).",
    DeprecationWarning,
    stacklevel=2,
)
