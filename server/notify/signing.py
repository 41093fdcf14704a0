"""Standard Webhooks signatures (https://www.standardwebhooks.com): HMAC-SHA256 over "id.timestamp.body",
with secrets written whsec_<base64>. Signed by the reference library's own `sign`, so what receivers
verify with it is what we send."""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def headers(event_id: str, body: bytes, at: datetime, secrets_in_use: list[str]) -> dict[str, str]:
    """The three headers; while a rotated secret overlaps, one signature per secret (space-separated)."""
    text = body.decode()
    signatures = " ".join(Webhook(secret).sign(event_id, at, text) for secret in secrets_in_use)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
    }
