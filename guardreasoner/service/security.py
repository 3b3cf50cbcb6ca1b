"""API keys, the loopback rule and the body-size limit: plain ASGI middleware, so they answer before any
route reads the body (an unauthenticated or oversized request costs the server almost nothing)."""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from pathlib import Path

from fastapi import HTTPException

# Paths anyone may read: liveness for load balancers, and the API's documentation.
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
API_KEY_ENV = "GUARDREASONER_API_KEY"


def load_keys(keys: list[str] | None = None, key_file: str | Path | None = None) -> list[str]:
    """Keys from the command line and from a file (one a line; blank lines and #-comments skipped)."""
    found = [key.strip() for key in keys or [] if key and key.strip()]
    if key_file:
        for line in Path(key_file).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                found.append(line)
    if not found and os.environ.get(API_KEY_ENV):
        found.append(os.environ[API_KEY_ENV].strip())
    short = [key for key in found if len(key) < 16]
    if short:
        raise ValueError(f"{len(short)} API key(s) shorter than 16 characters; use long random keys "
                         "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return found


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def check_exposure(host: str, keys: list[str]) -> None:
    """Refuse to listen beyond loopback without a key: anyone on the network could use the model."""
    if not keys and not is_loopback(host):
        raise SystemExit(f"refusing to listen on {host} without an API key: pass --api-key or --api-key-file "
                         f"(or set {API_KEY_ENV}), or listen on 127.0.0.1")


def key_matches(presented: str, keys: list[str]) -> bool:
    """Constant-time comparison against every key (no early exit, so timing tells nothing about which)."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    return matched


async def send_error(send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class APIKeyMiddleware:
    """Every path outside OPEN_PATHS needs ``Authorization: Bearer <key>`` when the server has keys."""

    def __init__(self, app, keys: list[str]):
        self.app = app
        self.keys = list(keys)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.keys or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return await send_error(send, 401, "missing API key: send the header 'Authorization: Bearer <key>'",
                                    {"www-authenticate": "Bearer"})
        if not key_matches(presented.strip(), self.keys):
            return await send_error(send, 401, "invalid API key", {"www-authenticate": "Bearer"})
        return await self.app(scope, receive, send)


class _BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body reader passes it on as a 413 rather than a generic 400."""

    def __init__(self, message: str):
        super().__init__(413, message)


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``: refused from its Content-Length at once, or counted as it streams in
    (chunked uploads send no length)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"request body over the server's limit of {self.max_bytes} bytes"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await send_error(send, 413, message)
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(message)
            return event

        async def tracked_send(event):
            nonlocal started
            started |= event["type"] == "http.response.start"
            await send(event)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                await send_error(send, 413, message)
