"""Template tags of bill_integration (``{% load bill_mfa %}``)."""
