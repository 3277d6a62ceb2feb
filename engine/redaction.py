"""Credentials out of URLs before a URL is stored, logged or shown.

A key pasted into an endpoint URL (``https://user:sk-...@host/v1?api_key=sk-...``) would
otherwise travel into the saved spec, job errors, events and worker logs. :func:`redact_url`
is the one place that masks it; it is applied by the spec serialisation (so a stored spec
never holds it), by the chat client's error messages, by the worker's failure records and by
the worker's log handler. Keys belong in environment variables named by ``api_key_env``.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

MASK = "***"
"""What a credential is replaced with."""

# Query (or fragment) parameters whose value is a credential. Others (e.g. Azure's
# ``api-version``) are kept: the stored URL must still reach the endpoint.
_SECRET_PARAM = re.compile(
    r"key|token|secret|passw|pwd|auth|sig|credential|session|cookie|bearer", re.IGNORECASE
)
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def _mask_params(params: str) -> str:
    parts = []
    for part in params.split("&"):
        name, eq, value = part.partition("=")
        parts.append(f"{name}={MASK}" if eq and value and _SECRET_PARAM.search(name) else part)
    return "&".join(parts)


def _redact_one(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a malformed IPv6 host: show the scheme only
        return url.split("://", 1)[0] + "://" + MASK
    head = f"{parts.scheme}://"
    netloc = parts.netloc
    if "@" in netloc:  # user:password@ or a bare token@: the whole userinfo is a credential
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    out = head + netloc + parts.path
    if parts.query or url.endswith("?"):
        out += "?" + _mask_params(parts.query)
    if parts.fragment or url.endswith("#"):
        out += "#" + _mask_params(parts.fragment)
    return out


def redact_url(text: str) -> str:
    """``text`` (a URL, or a message that contains URLs) with every URL's credentials masked.

    Masks the userinfo (``user:password@``) and the values of query and fragment parameters
    whose name looks like a credential (``api_key``, ``token``, ``sig``, ...).

    Examples:
        >>> redact_url("https://user:sk-secret@host/v1?api_key=sk-x&api-version=1")
        'https://***@host/v1?api_key=***&api-version=1'
    """
    if "://" not in text:
        return text
    return _URL.sub(lambda m: _redact_one(m.group(0)), text)


def has_masked_credentials(url: str) -> bool:
    """Whether ``url`` is a stored (redacted) URL whose credentials were masked away."""
    return redact_url(url) == url and (f"{MASK}@" in url or f"={MASK}" in url)


class RedactingFilter(logging.Filter):
    """A handler filter that masks URL credentials in every record's message (see :func:`redact_url`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_url(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
