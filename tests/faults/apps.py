"""The fault-injection test app: the supervised ``basic`` app plus tasks that keep a ledger.

The worker reads everything from the environment (``FAULTS_*``), so one module serves
every scenario. Each task records what happened to it in a *ledger* Redis database that
no fault touches (the real Redis at 127.0.0.1:6379), so a test can prove that nothing was
lost or run twice even while the broker or the supervision store is down.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery import Celery

import prismatic_celery
from tests.apps.basic import counter, make_app

# Secrets a careless exception message may carry; none of them may reach Redis or a plugin log line.
SECRETS = (
    "s3cret",
    "abc.def.ghi",
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "hunter2hunter2",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
)
_BIG = 1_000_000


def _unprintable(message: str) -> Exception:
    class Unprintable(LookupError):
        def __str__(self) -> str:
            raise RuntimeError("no __str__ for you")

        def __repr__(self) -> str:
            raise RuntimeError("no __repr__ either")

    return Unprintable(message)


def leak_message(kind: str) -> Any:
    """The exception argument for one kind of hostile message (built here, never passed in a message)."""
    messages: dict[str, Any] = {
        "url": "could not connect to postgres://user:s3cret@db.internal:5432/app",
        "bearer": "upstream answered 401 to Authorization: Bearer abc.def.ghi",
        "header_dict": "request headers {'Authorization': 'Bearer abc.def.ghi', 'Accept': '*/*'}",
        "aws": f"boto: aws_access_key_id={SECRETS[2]} aws_secret_access_key={SECRETS[3]}",
        "json_password": 'login failed for {"user": "bob", "password": "hunter2hunter2"}',
        "jwt": f"token rejected: {SECRETS[5]}",
        "github": f"git push refused for {SECRETS[6]}",
        "private_key": f"bad key -----BEGIN RSA PRIVATE KEY-----\n{SECRETS[7]}\n-----END RSA PRIVATE KEY----- end",
        "huge": "postgres://user:s3cret@host/db " + "x" * _BIG + " Authorization: Bearer abc.def.ghi",
        "huge_words": "word " * (_BIG // 5) + "password=hunter2hunter2",
        "bytes": b"postgres://user:s3cret@host/db",
        "non_utf8": b"\xff\xfe\x80 password=hunter2hunter2 \xc3\x28 token: AKIAIOSFODNN7EXAMPLE",
        "control": "password=hunter2hunter2\x00\x1b[31m\u202e\u200b tail\r\nnext line",
        "surrogate": "half a pair \udcff then postgres://user:s3cret@host",
        "dict_arg": {"password": "hunter2hunter2", "dsn": "postgres://user:s3cret@host"},
    }
    return messages[kind]


LEAK_KINDS = (
    "url", "bearer", "header_dict", "aws", "json_password", "jwt", "github", "private_key", "huge", "huge_words",
    "bytes", "non_utf8", "control", "surrogate", "dict_arg",
)


def make_faults_app(broker_url: str, namespace: str, store_url: str | None, ledger_url: str, **conf: Any) -> Celery:
    """The basic app (same tree and tasks) plus the ledger-keeping tasks of this suite."""
    app = make_app(broker_url, namespace, store_url, **conf)

    def ledger() -> Any:
        return counter(ledger_url)

    @app.task(name="faults.work", shared=False, bind=True)
    def work(self: Any, key: str, sleep_s: float = 0.0, fails: int = 0, flag: str = "") -> int:
        """Stamps each execution, optionally waits for a ledger flag, sleeps, fails the first ``fails`` times
        with ConnectionError; counts ``runs:<key>`` once it really completes."""
        led = ledger()
        attempt = int(led.incr(f"attempts:{key}"))
        led.rpush(f"stamps:{key}", json.dumps({"t": time.time(), "retries": self.request.retries,
                                               "reruns": prismatic_celery.reruns(self.request),
                                               "attempt": attempt, "pid": os.getpid()}))
        led.hset("running", str(os.getpid()), json.dumps({"key": key, "t": time.time()}))
        try:
            deadline = time.monotonic() + 30
            while flag and not led.get(flag) and time.monotonic() < deadline:
                time.sleep(0.02)
            if sleep_s:
                time.sleep(sleep_s)
            if attempt <= fails:
                raise ConnectionError(f"dependency down for {key} (attempt {attempt})")
        finally:
            led.hdel("running", str(os.getpid()))
        led.incr(f"runs:{key}")
        return attempt

    @app.task(name="faults.leak", shared=False)
    def leak(kind: str, exc: str = "LookupError") -> None:
        """Raises an exception whose message carries secrets / hostile text (see :func:`leak_message`)."""
        ledger().incr(f"leaks:{kind}:{exc}")
        if kind == "unprintable":
            raise _unprintable("postgres://user:s3cret@host")
        cls = {"LookupError": LookupError, "ConnectionError": ConnectionError}[exc]
        raise cls(leak_message(kind))

    @app.task(name="faults.reject", shared=False)
    def reject(key: str, *args: Any, **kwargs: Any) -> str:
        """Fails with an unknown error (escalated to the dead-letter queue) until the ledger flag ``fixed``
        is set; then records what arguments it received, so a test can check a replay kept them."""
        led = ledger()
        led.incr(f"rejects:{key}")
        if not led.get("fixed"):
            raise LookupError(f"rejected {key} by the test")
        first = args[0] if args else None
        led.set(f"received:{key}", json.dumps({"args": len(args), "first_len": len(first) if isinstance(first, str)
                                               else None, "kwargs": sorted(kwargs)}))
        led.incr(f"runs:{key}")
        return key

    @app.task(name="faults.accept", shared=False)
    def accept(key: str, *args: Any, **kwargs: Any) -> int:
        """Counts one run of ``key`` (a replayed dead letter lands here)."""
        return int(ledger().incr(f"runs:{key}"))

    return app


def _from_env() -> Celery:
    return make_faults_app(
        os.environ.get("FAULTS_BROKER_URL", "memory://"),
        os.environ.get("FAULTS_NAMESPACE", "faults"),
        os.environ.get("FAULTS_STORE_URL") or None,
        os.environ.get("FAULTS_LEDGER_URL", "redis://127.0.0.1:6379/0"),
        **json.loads(os.environ.get("FAULTS_CONF", "{}")),
    )


app = _from_env()
