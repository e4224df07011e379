"""The control link's shared-secret handshake: a mutual HMAC-SHA256 challenge-response. Pure.

When the media worker holds a secret it answers the FastAGI side's ``hello`` not with its own
``hello`` but with a challenge; the secret itself never crosses the wire:

1. FastAGI -> worker: ``hello`` (as without a secret).
2. worker -> FastAGI: ``{"type": "auth_challenge", "nonce": Ns}`` (32 random bytes, hex).
3. FastAGI -> worker: ``{"type": "auth_response", "nonce": Nc, "mac": HMAC(K, "client" Ns Nc)}``
4. worker: compares the MAC in constant time (``hmac.compare_digest``); a wrong or missing
   one closes the link (WebSocket code 1008, "control secret rejected") with a log line.
   Otherwise -> FastAGI: ``{"type": "auth_ok", "mac": HMAC(K, "server" Ns Nc)}``, then its
   ``hello``; the FastAGI side checks that MAC too, so a listener that does not hold the secret
   cannot pose as a media worker.

``K`` is the secret's UTF-8 bytes; the labels ("client", "server") and :data:`AUTH_LABEL` keep a
MAC of one direction from being replayed in the other, and the two fresh nonces keep a recorded
exchange from being replayed on a new link. What this does not give: confidentiality or
integrity of the messages after the handshake (the link is plain ``ws://``); beyond one host's
loopback, run it over a private network or a tunnel (docs/topology.md).

Who requires it (:mod:`media_sidecar.ops.control_secret`): a worker with a secret always challenges, and refuses to
bind a non-loopback control address without one; the FastAGI side answers a challenge when it
has the secret, and, when the worker is not on loopback, refuses a link the worker did not
authenticate.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

AUTH_LABEL = b"agi-voice control link auth v1"
NONCE_HEX = 64
"""32 random bytes, hex."""
MAX_AUTH_MESSAGE = 512


class AuthError(ValueError):
    """A malformed handshake message or a MAC that does not match."""


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: str


@dataclass(frozen=True, slots=True)
class Response:
    nonce: str
    mac: str


@dataclass(frozen=True, slots=True)
class Proof:
    mac: str


AuthMessage = Challenge | Response | Proof
_TYPES = {"auth_challenge": Challenge, "auth_response": Response, "auth_ok": Proof}


def new_nonce() -> str:
    return secrets.token_hex(NONCE_HEX // 2)


def is_auth_message(text: str | bytes) -> bool:
    """Whether a control-link text frame is one of these (cheap: ``auth_`` in its type)."""
    head = text[:40] if isinstance(text, str) else text[:40].decode("utf-8", "replace")
    return '"auth_' in head


def encode(msg: AuthMessage) -> str:
    name = next(k for k, v in _TYPES.items() if isinstance(msg, v))
    body: dict[str, str] = {"type": name}
    if isinstance(msg, (Challenge, Response)):
        body["nonce"] = msg.nonce
    if isinstance(msg, (Response, Proof)):
        body["mac"] = msg.mac
    return json.dumps(body)


def decode(text: str | bytes) -> AuthMessage:
    """Parse one handshake message; raises :class:`AuthError` for anything else."""
    if len(text) > MAX_AUTH_MESSAGE:
        raise AuthError(f"handshake message of {len(text)} bytes > {MAX_AUTH_MESSAGE}")
    try:
        obj = json.loads(text)
    except ValueError:
        raise AuthError("handshake message is not JSON") from None
    if not isinstance(obj, dict) or obj.get("type") not in _TYPES:
        kind = obj.get("type") if isinstance(obj, dict) else type(obj).__name__
        raise AuthError(f"expected a control secret handshake message, got {kind!r}")
    cls = _TYPES[obj.pop("type")]
    want = {"nonce", "mac"} if cls is Response else {"nonce"} if cls is Challenge else {"mac"}
    if set(obj) != want or not all(_is_hex(obj[k]) for k in want):
        raise AuthError(f"malformed {cls.__name__.lower()} (expected {sorted(want)} as "
                        f"{NONCE_HEX} hex digits)")
    return cls(**obj)


def _is_hex(value: object) -> bool:
    return (isinstance(value, str) and len(value) == NONCE_HEX
            and all(c in "0123456789abcdef" for c in value))


def _mac(secret: str, side: bytes, server_nonce: str, client_nonce: str) -> str:
    msg = b"\0".join((AUTH_LABEL, side, server_nonce.encode(), client_nonce.encode()))
    return hmac.new(secret.encode("utf-8"), msg, hashlib.sha256).hexdigest()


def client_mac(secret: str, server_nonce: str, client_nonce: str) -> str:
    return _mac(secret, b"client", server_nonce, client_nonce)


def server_mac(secret: str, server_nonce: str, client_nonce: str) -> str:
    return _mac(secret, b"server", server_nonce, client_nonce)


def verify(expected: str, given: str) -> bool:
    """Constant-time comparison of two MACs."""
    return hmac.compare_digest(expected.encode(), given.encode())


def answer(secret: str, challenge: Challenge) -> Response:
    """The FastAGI side's response to a worker's challenge."""
    nonce = new_nonce()
    return Response(nonce=nonce, mac=client_mac(secret, challenge.nonce, nonce))

