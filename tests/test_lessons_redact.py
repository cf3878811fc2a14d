"""Redaction: secrets never reach the store, ordinary text is left alone, length is bounded."""

from __future__ import annotations

import time

import pytest

from prismatic_celery.lessons.redact import MASK, redact, sanitize

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq98sZ1\nq2XK3xS9\n-----END RSA PRIVATE KEY-----"
)

# (text, the secret that must disappear, what must remain)
SECRETS = [
    ("redis://user:s3cr3t@cache:6379/0 unreachable", "s3cr3t", "redis://user:***@cache:6379/0"),
    ("amqp://:p@ss@broker:5672// refused", "p@ss", "amqp://:***@broker:5672//"),
    ("postgresql://app:Tr0ub4dor&3@db/prod", "Tr0ub4dor", "postgresql://app:***@db/prod"),
    ("login failed: password=hunter2 user=bob", "hunter2", "user=bob"),
    ("DB_PASSWORD='hunter2' not accepted", "hunter2", "DB_PASSWORD='***'"),
    ('payload {"password": "correct horse", "user": "bob"}', "correct horse", '"user": "bob"'),
    ("passwd: hunter2", "hunter2", "passwd: ***"),
    ("client_secret=shh&grant_type=client_credentials", "shh", "grant_type=client_credentials"),
    ("refresh failed token=tok_123456", "tok_123456", "token=***"),
    ("api_key=AbCdEf123 rejected", "AbCdEf123", "api_key=*** rejected"),
    ("header X-Api-Key: 12345abcdef", "12345abcdef", "X-Api-Key: ***"),
    ("apikey: 9f8e7d6c5b4a39281706", "9f8e7d6c5b4a39281706", "apikey: ***"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI", "aws_secret_access_key = "),
    ("access_key=AKIDEXAMPLE region=eu", "AKIDEXAMPLE", "region=eu"),
    ("accessToken=abc123 in body", "abc123", "accessToken=***"),
    ("Authorization: Bearer abc.def.ghi", "abc.def.ghi", "Authorization: Bearer ***"),
    ("headers={'Authorization': 'Basic dXNlcjpwYXNz'}", "dXNlcjpwYXNz", "'Basic ***'"),
    ("retrying with bearer 0a1b2c3d4e5f", "0a1b2c3d4e5f", "bearer ***"),
    (f"jwt {JWT} expired", JWT, "jwt *** expired"),
    ("signed with AKIAIOSFODNN7EXAMPLE in us-east-1", "AKIAIOSFODNN7EXAMPLE", "in us-east-1"),
    (f"bad key {PRIVATE_KEY} after", "MIIEowIBAAKCAQEA7bq98sZ1", "[REDACTED PRIVATE KEY] after"),
    ("token 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 rejected", "9f86d081884c7d659a2f",
     "token *** rejected"),
    ("leaked ghp_abcdefghijklmnopqrstuvwxyz0123456789 in log", "ghp_abcdefghij", "leaked *** in log"),
    ("slack xoxb-123456789012-abcdefghijkl failed", "xoxb-123456789012", "slack *** failed"),
]

ORDINARY = [
    "Connection refused while connecting to host db-1:5432",
    "unexpected token: ')' at line 3",
    "Basic authentication failed for user bob",
    "KeyError: 'user_id'",
    "The secret sauce is missing",
    "Processed 1234 records in 5.2s",
    "GET https://example.com/path?q=1 returned 503",
    "Invalid password for user bob",
    "ValueError: invalid literal for int() with base 10: 'abc'",
    "token expired, please log in again",
    "design=compact layout=grid",
    "order 550e8400-e29b-41d4-a716-446655440000 failed at 2024-05-01T12:30:45Z",
]


@pytest.mark.parametrize(("text", "secret", "kept"), SECRETS)
def test_secrets_are_replaced_by_the_mask(text: str, secret: str, kept: str) -> None:
    """Each kind of secret disappears and the text around it survives."""
    out = redact(text)
    assert secret not in out
    assert kept in out
    assert MASK in out or "[REDACTED PRIVATE KEY]" in out


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_not_redacted(text: str) -> None:
    """Messages without secrets come back unchanged, even when they mention 'password' or 'token'."""
    assert redact(text) == text


def test_a_private_key_without_its_end_line_is_removed_to_the_end() -> None:
    """A key block cut short (no END line) is still removed entirely."""
    out = redact("config -----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7")
    assert out == "config [REDACTED PRIVATE KEY]"


def test_bytes_are_decoded_with_replacement() -> None:
    """Non-UTF-8 bytes are accepted: invalid sequences become U+FFFD, secrets are still redacted."""
    out = redact(b"password=hunter2 \xff\xfe end")
    assert out == "password=*** \ufffd\ufffd end"


def test_control_and_bidi_characters_are_removed_but_newlines_and_tabs_kept() -> None:
    """Terminal escapes, NULs and bidi overrides go; the text's lines stay readable."""
    assert redact("a\x00b\x1b[31mc\r\nnext\ttab\u202eevil\x7f") == "ab[31mc\nnext\ttabevil"


def test_output_is_bounded_with_a_marker() -> None:
    """A long message is cut to the limit and says how long it was."""
    out = redact("x" * 5000, limit=100)
    assert len(out) == 100
    assert out.endswith("...[truncated from 5000 chars]")
    assert redact("short", limit=100) == "short"


def test_a_secret_beyond_the_scanned_window_cannot_leak_through_the_cut() -> None:
    """Text past the scanned window is dropped with the partial word at the cut, never shown half-redacted."""
    text = "password=" + "y" * 9000 + " AKIAIOSFODNN7EXAMPLE"
    out = redact(text, limit=100)
    assert "AKIA" not in out and "yyy" not in out
    assert len(out) <= 100


def test_odd_input_never_raises() -> None:
    """Objects with a broken __str__ and empty input are handled; a bad limit is a programming error."""

    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert redact(Broken()) == "<unprintable Broken>"  # type: ignore[arg-type]
    assert redact("") == ""
    with pytest.raises(ValueError):
        redact("x", limit=0)


def test_adversarial_input_is_redacted_quickly() -> None:
    """Pathological inputs (no delimiters, repeated key words) stay fast: the patterns are bounded."""
    inputs = ["a." * 50000, "a-" * 50000, "password: " * 20000, '"password": "' * 5000, "token=" * 20000,
              "https://" * 20000, "aA" * 50000, "Basic " * 20000]
    started = time.perf_counter()
    for text in inputs:
        redact(text)
    assert time.perf_counter() - started < 2.0


def test_sanitize_bounds_a_label_without_redacting() -> None:
    """Labels (task names, exception types) lose control characters and are clipped, nothing else."""
    assert sanitize("app.tasks.rotate_token\x00\n", limit=200) == "app.tasks.rotate_token"
    assert sanitize("x" * 500, limit=10) == "x" * 10
