"""Secrets out, length bounded: every message is passed through :func:`redact` before it is stored.

What is redacted (replaced by ``***``):

* passwords in URLs (``scheme://user:PASS@host`` keeps the user and host);
* values after secret-like keys: ``password=``, ``passwd``, ``pwd``, ``secret``, ``token``,
  ``api_key``/``apikey``, ``access_key``, ``secret_key``, ``private_key``, ``credentials``...
  (``key=value``, ``"key": "value"`` and ``key: value`` forms; after ``key: value`` only a value
  that looks like a credential for the weaker keys such as ``token``);
* ``Authorization:`` header values, ``Bearer xxx`` and ``Basic xxx`` (when it decodes to
  ``user:password``);
* AWS access key ids (``AKIA...``), JWTs (``eyJ...``), well-known token prefixes (GitHub,
  Slack, Stripe, Google API keys) and long hex/base64 tokens right after a key-like word;
* private key blocks (``-----BEGIN ... PRIVATE KEY-----`` to its end, or to the end of the text).

The text is also made safe to store and print: bytes are decoded as UTF-8 with replacement,
control characters (except newline and tab) and bidirectional overrides are removed, and the
result is at most ``limit`` characters (a ``...[truncated from N chars]`` marker ends a cut text).
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["MASK", "redact", "sanitize"]

MASK = "***"

# Control characters except \t and \n, C1 controls, and the bidi/zero-width overrides that make
# a stored message display differently from what it is.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_LABEL_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")

_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.*?"
    r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.DOTALL,
)
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]{0,30}://[^\s:/@?#]{0,256}):([^\s/?#]*)@")
_AUTH_HEADER = re.compile(
    r"(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)(?:(bearer|basic|token|digest|negotiate|ntlm|apikey)\s+)?"
    r"([^\s\"',;]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)
_BASIC = re.compile(r"(\bbasic\s+)([A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])", re.IGNORECASE)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*")
_KNOWN_TOKENS = re.compile(
    r"\b(?:(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}"  # AWS access key ids
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"  # GitHub
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}"  # Stripe
    r"|AIza[0-9A-Za-z_\-]{30,})\b"  # Google API keys
)

# Key words naming a secret. "Strong" ones redact whatever follows a ':' too; the others
# (token, credentials...) only a value that looks like a credential, so "unexpected token: ')'"
# stays. A key word starts a word or a camelCase hump (DB_PASSWORD, X-Api-Key, accessToken), and
# every repetition is bounded so that no input makes these patterns slower than linear.
_STRONG = r"password|passwd|passphrase|pwd|secret|api[_\-]?key|access[_\-]?key|private[_\-]?key"
_WEAK = r"token|auth[_\-]?key|credentials?|signature|session[_\-]?id"
_START = r"(?:(?<![A-Za-z])|(?<=[a-z])(?=[A-Z]))"
_TAIL = r"[A-Za-z0-9_\-]{0,40}"
_STRONG_KEY = rf"{_START}(?i:{_STRONG}){_TAIL}"
_ANY_KEY = rf"{_START}(?i:{_STRONG}|{_WEAK}){_TAIL}"
_VALUE = r"""[^\s"',;&)}\]]+"""
_QUOTED_KV = re.compile(rf"""(["'][A-Za-z0-9_.\-]{{0,40}}?{_ANY_KEY}["']\s*[:=]\s*)(["'])(?:\\.|(?!\2).)*\2""")
_ASSIGN_KV = re.compile(rf"""({_ANY_KEY}\s*=\s*)(["']?){_VALUE}\2?""")
_STRONG_COLON = re.compile(rf"""({_STRONG_KEY}:\s*)["']?{_VALUE}["']?""")
_WEAK_COLON = re.compile(
    rf"""({_ANY_KEY}:\s*)["']?(?=[A-Za-z0-9_\-.+/=]*\d)[A-Za-z0-9_\-.+/=]{{8,}}["']?"""
)
# A long hex or base64-ish token right after a key-like word ("token 9f86d08...", "key=...").
_AFTER_KEYWORD = re.compile(
    r"(?i)(\b(?:token|key|secret|password|passwd|apikey|api_key|credentials?|signature|bearer)s?\b[\s:=\"']+)"
    r"(?=[A-Za-z0-9+/_\-]*\d)[A-Za-z0-9+/_\-]{16,}={0,2}"
)


def _basic(match: re.Match[str]) -> str:
    """Redact ``Basic xxx`` only when xxx really is base64 of ``user:password``."""
    token = match.group(2)
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return match.group(0)
    return match.group(1) + MASK if ":" in decoded and decoded.isprintable() else match.group(0)


def _auth_header(match: re.Match[str]) -> str:
    scheme = match.group(2)
    return f"{match.group(1)}{scheme + ' ' if scheme else ''}{MASK}"


def _to_text(text: str | bytes | object) -> str:
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text).decode("utf-8", errors="replace")
    try:
        return str(text)
    except Exception:  # a broken __str__ must not break the caller
        return f"<unprintable {type(text).__name__}>"


def _scan_window(limit: int) -> int:
    return limit * 4 + 256


def redact(text: str | bytes, *, limit: int = 2000) -> str:
    """``text`` with secrets replaced by ``***``, control characters removed, at most ``limit`` chars.

    Accepts bytes (decoded as UTF-8 with replacement) and never raises on odd input.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    value = _to_text(text)
    total = len(value)
    # Only a bounded prefix is scanned (regex cost stays linear in ``limit``); the look-ahead
    # beyond ``limit`` catches a secret that starts before the cut.
    if total > _scan_window(limit):
        # A secret cut in half at the window's edge could escape the patterns and, once
        # redaction shortened the text before it, surface in the output: drop the partial last
        # word, unless it starts within ``limit`` (then it is one huge word, kept truncated).
        value = value[: _scan_window(limit)]
        start = len(value)
        while start > 0 and not value[start - 1].isspace():
            start -= 1
        if start > limit:
            value = value[:start]
    value = value.replace("\r\n", "\n")
    value = _CONTROL.sub("", value)
    value = _PRIVATE_KEY.sub("[REDACTED PRIVATE KEY]", value)
    value = _URL_PASSWORD.sub(rf"\1:{MASK}@", value)
    value = _AUTH_HEADER.sub(_auth_header, value)
    value = _BEARER.sub(rf"\1{MASK}", value)
    value = _BASIC.sub(_basic, value)
    value = _JWT.sub(MASK, value)
    value = _KNOWN_TOKENS.sub(MASK, value)
    value = _QUOTED_KV.sub(rf"\1\2{MASK}\2", value)
    value = _ASSIGN_KV.sub(rf"\1\2{MASK}\2", value)
    value = _STRONG_COLON.sub(rf"\1{MASK}", value)
    value = _WEAK_COLON.sub(rf"\1{MASK}", value)
    value = _AFTER_KEYWORD.sub(rf"\1{MASK}", value)
    scanned = min(total, _scan_window(limit))
    if len(value) <= limit and scanned == total:
        return value
    marker = f"...[truncated from {total} chars]"
    if len(marker) >= limit:
        return value[:limit]
    return value[: limit - len(marker)] + marker


def sanitize(text: str | bytes, *, limit: int = 200) -> str:
    """A short label (task, domain, exception type) made safe to store: no control characters (not
    even newlines), at most ``limit`` characters. No redaction: labels name code, not data."""
    return _LABEL_CONTROL.sub("", _to_text(text)[: limit * 2])[:limit]
