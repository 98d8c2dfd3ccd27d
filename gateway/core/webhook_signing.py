"""Standard Webhooks signatures: what every request the gateway sends to a
webhook receiver carries (webhook-id, webhook-timestamp, webhook-signature:
``v1,`` + base64 of HMAC-SHA256 over ``id.timestamp.body``), so a receiver
verifies it with any Standard Webhooks library.  Shared by the event
webhooks and the auth webhook."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

SECRET_PREFIX = "whsec_"
USER_AGENT = "whip-gateway-webhooks"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_`` + base64 of the key bytes."""
    text = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    return base64.b64decode(text, validate=True)


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64(HMAC-SHA256(key, id.timestamp.body))."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(key: bytes, message_id: str, body: bytes) -> dict[str, str]:
    timestamp = int(time.time())
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, message_id, timestamp, body),
    }

