"""SendGrid's side of the Signed Event Webhook: a real ECDSA P-256 key pair, signing as SendGrid does."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


class WebhookSigner:
    """A key pair like the one SendGrid generates when signing is turned on."""

    def __init__(self) -> None:
        self._private = ec.generate_private_key(ec.SECP256R1())
        der = self._private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode("ascii")
        """What SendGrid shows under Mail Settings → Signed Event Webhook (base64 DER)."""

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The headers SendGrid sends with ``body``: ECDSA-SHA256 over timestamp + body, base64 DER."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._private.sign(stamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
        return {SIGNATURE: base64.b64encode(signature).decode("ascii"), TIMESTAMP: stamp}


def event(kind: str, email: str, **fields: Any) -> dict[str, Any]:
    """One SendGrid event as the webhook posts it (custom_args appear as top-level fields)."""
    return {
        "email": email,
        "timestamp": int(time.time()),
        "event": kind,
        "sg_event_id": fields.pop("sg_event_id", uuid.uuid4().hex),
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "category": ["mobilise"],
        **fields,
    }


def body(*events: dict[str, Any]) -> bytes:
    return json.dumps(list(events)).encode("utf-8")
