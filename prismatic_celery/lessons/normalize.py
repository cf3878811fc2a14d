"""Normalize a crash message: the same bug on different data gets the same text (Sentry-style).

Message normalization follows Sentry's parameterization of messages (ips, uuids, hex, numbers,
dates, e-mails, urls, host names) and adds rules for ids and quoted names. The steps run in this
order, each on the output of the ones before it:

1. **Secrets** are redacted and the text cut to 1000 characters (:func:`.redact.redact`);
   whitespace runs become one space.
2. **Structured data** becomes a placeholder: URLs ``<url>``; e-mail addresses ``<email>``; ISO
   dates and date-times ``<timestamp>``; clock times ``<time>``; UUIDs ``<uuid>``; ``at 0x7f..``
   ``at <addr>``; other ``0x`` literals ``<hex>``; IPv4 addresses (with their port) and IPv6
   addresses ``<ip>``.
3. **HTTP status codes** keep their class: a 3-digit code after ``HTTP``, ``HTTP/1.1``, ``status``,
   ``status code`` or ``status_code`` (``:`` or ``=`` may separate them), or before
   ``Client Error``/``Server Error``, becomes ``<4xx>``, ``<5xx>``... So 404 and 410 group while
   404 and 503 do not: a refused request and a failing server are different bugs, remediated
   differently.
4. **Host names** become ``<host>``:

   * after ``host``, ``hostname``, ``host name``, ``resolve``, ``resolving``, ``lookup``,
     ``connect to``, ``connecting to`` or ``connection to`` (maybe followed by ``host`` or
     ``server at``) or ``server at``, then maybe ``:`` or ``=``: a name that is quoted, contains a
     ``.``, ``-`` or digit, or is followed by ``:port`` (``Failed to resolve 'redis'``,
     ``connecting to redis:6379``);
   * after ``@`` (a Celery node name), one label with a digit or ``-`` (``celery@worker-a1b2c3``);
   * EC2 names ``ip-10-0-3-17``;
   * ``name:port`` where the name is ``localhost``, has a ``-`` or digit, or is dotted and does not
     end in a file extension (``redis-7:6379``, ``cache.prod:6379``; not ``tasks.py:12``);
   * dotted names, not right after ``/``, ``@``, ``:``, ``.`` or ``-``, whose last label is not a
     file extension (``py``, ``json``, ``csv``, ``log``...) and that either end in ``com``,
     ``net``, ``org``, ``edu``, ``gov``, ``mil``, ``info``, ``biz``, ``cloud``, a common country
     code (``uk``, ``de``, ``fr``, ``eu``, ``nl``, ``ru``, ``br``, ``ca``, ``au``, ``jp``, ``cn``,
     ``ch``, ``se``, ``es``), ``internal``, ``localdomain``, ``consul``, ``arpa`` or
     ``localhost``; or end in ``io``, ``co``, ``local``, ``lan``, ``home``, ``corp``, ``svc``,
     ``test``, ``example``, ``invalid`` or ``intranet`` and have three labels or more, a digit or
     a ``-`` (so the modules ``pandas.io`` and ``werkzeug.local`` stay); or have a ``-`` in a label
     before the last (a Python dotted name never does: ``db-3.prod``).

   The port becomes ``<n>`` in step 8.
5. **Quoted strings** (``'...'`` or ``"..."``, up to 300 characters, quotes not glued to a word,
   so ``can't`` opens nothing) are names or data. One is kept verbatim, so that
   ``KeyError('user_id')`` and ``KeyError('email')``, or ``no attribute 'name'`` and
   ``no attribute 'email'``, stay different bugs, when all of these hold:

   * it matches ``[A-Za-z_][A-Za-z0-9_.-]{0,40}``: an identifier, a dotted path or a short
     kebab-case word, with no space, ``/``, ``@``, ``:`` or placeholder from the steps above;
   * steps 7 and 8 would leave it unchanged, i.e. it holds no number and no id: ``'item_3'``,
     ``'ord_8f3k2'``, ``'a1b2c3d4'`` and ``'utf-8'`` are data, ``'sha256'`` and ``'ec2'`` are
     names;
   * it is not a value: it does not follow ``=`` (``key='v'``, Sentry's rule), ``'key':`` or
     ``"key":`` (a dict or JSON value), or a conversion colon: ``base N:``, ``float:``,
     ``int:``, ``complex:``, ``decimal:``, ``string:``, ``literal:``, ``value:``, ``input:`` or
     ``type T:`` (``invalid literal for int() with base 10: 'abc'``).

   Every other quoted string becomes ``'<str>'`` (or ``"<str>"``): ids, numbers, e-mails, URLs,
   host names, paths, free text with spaces, anything longer than 41 characters. One exception:
   the quoted argument of an exception's repr (``NewConnectionError('...')``: a capitalized
   name of letters and ``_``, not glued to a word, ``/``, ``\\``, ``.`` or ``-``, ending in
   ``Error``, ``Exception``, ``Warning``, ``Timeout``, ``Disconnected``, ``Failure`` or ``Fault``,
   then ``(``) is a message, not a value: it is kept, its own quoted strings go through this
   step, and the later steps normalize it, so a wrapped ``Connection refused`` and a wrapped
   ``Name or service not known`` stay apart.
6. **Paths** of two segments or more (``/a/b``, ``C:\\a\\b``) become ``<path>`` when they contain a
   digit or a temporary file name (``/data/run-17/out.csv``, ``/tmp/tmpk3j2_x9a/report.csv``);
   ``/etc/app.conf`` is kept: it names a place, not data.
7. **Opaque ids** become ``<id>``: temporary file names (``tmp`` and 8 of ``[a-z0-9_]``);
   Kubernetes pod suffixes (``web-7d9f8b6c4-x2x9z`` is ``web-<id>``); ULIDs; base64-like tokens
   (16 or more of ``[A-Za-z0-9+/]``, maybe ``=`` padded, with a digit, ``+``, ``/`` or ``=``,
   and at least a quarter of their letters in each case, so ``ConnectionPoolV2Manager`` stays);
   hex strings of 7 characters or more, in one case, with a digit and a letter (digests, git
   shas).
8. **Words with digits.** In every run of letters and digits (``_``, ``-``, ``.`` and other
   punctuation separate runs):

   * all digits: ``<n>``, with a leading ``-`` when it is a sign rather than a joint (``-1`` and
     ``7`` are both ``<n>``; ``redis-7`` is ``redis-<n>``);
   * two digit runs or more, 5 characters or more or starting with a digit (``a1b2c3``, ``x2x9z``,
     ``8f3k2``, ``1k0``): ``<id>`` (a shorter one starting with a letter, such as ``a1b2``, is kept);
   * digits then letters (``10s``, ``64KB``, ``3rd``): ``<n>`` then the letters;
   * letters, then 1 to 3 digits, maybe more letters (``sha256``, ``ec2``, ``py311``, ``k8s``): kept,
     a name; with 4 digits or more (``INV20240501``, ``cp1252``): the digits become ``<n>``.

   Then numbers joined by ``.``, ``,`` or an exponent (``3.25``, ``1,024``, ``1e-05``) become
   one ``<n>``.

Words without digits are never changed: the prose and the names in it are the bug, so
``queue is full`` and ``queue is empty`` differ. A result longer than 1000 characters (placeholders
can be longer than what they replace) is cut at its last space before that. Normalizing twice
changes nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from .redact import redact

__all__ = ["MESSAGE_LIMIT", "normalize_message"]

#: Longest normalized message that takes part in the fingerprint.
MESSAGE_LIMIT = 1000

_Replacement = str | Callable[[re.Match[str]], str]

# Word boundaries that a placeholder does not move: "<" and ">" count as word characters, so a
# second pass over normalized text sees the same boundaries as the first (idempotence).
_START = r"(?<![\w>])"
_END = r"(?![\w<])"

# Step 2: structured data.
_STRUCTURED: tuple[tuple[re.Pattern[str], _Replacement], ...] = (
    (re.compile(rf"{_START}[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>]+"), "<url>"),
    (re.compile(rf"\b[\w.+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+{_END}"), "<email>"),
    (
        re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"),
        "<timestamp>",
    ),
    (re.compile(r"(?<![\w.:\-])\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\b"), "<time>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"\bat 0x[0-9a-fA-F]+\b"), "at <addr>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"), "<ip>"),
    (
        re.compile(
            r"(?<![\w:>])(?:(?:[0-9a-fA-F]{1,4}:){3,7}[0-9a-fA-F]{1,4}"
            r"|(?:[0-9a-fA-F]{1,4}:){0,6}[0-9a-fA-F]{0,4}::(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){0,6})?)"
            r"(?![\w:<])"
        ),
        "<ip>",
    ),
)

# Step 3: HTTP status codes keep their class.
_HTTP_STATUS: tuple[tuple[re.Pattern[str], _Replacement], ...] = (
    (
        re.compile(
            rf"(?i){_START}(https?(?:/\d(?:\.\d)?)?|status(?:[ _-]?code)?)(\s*[:=]?\s*)([1-5])\d\d(?!\w|<|\.\d)"
        ),
        r"\1\2<\3xx>",
    ),
    (re.compile(r"(?<![\w.>])([1-5])\d\d(?= (?:Client|Server) Error\b)"), r"<\1xx>"),
)

# Step 4: host names.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_HOST = rf"{_LABEL}(?:\.{_LABEL}){{0,10}}"
_HOST_END = r"(?![\w\-<]|\.[A-Za-z0-9<])"
_STRONG_TLDS = frozenset({
    "com", "net", "org", "edu", "gov", "mil", "info", "biz", "cloud", "uk", "de", "fr", "eu",
    "nl", "ru", "br", "ca", "au", "jp", "cn", "ch", "se", "es", "internal", "localdomain", "consul", "arpa",
    "localhost",
})
_WEAK_TLDS = frozenset({"io", "co", "local", "lan", "home", "corp", "svc", "test", "example", "invalid", "intranet"})
_FILE_EXTENSIONS = frozenset({
    "py", "pyc", "pyi", "pyx", "so", "dll", "js", "mjs", "ts", "json", "yaml", "yml", "toml", "ini", "cfg",
    "conf", "txt", "csv", "tsv", "log", "html", "htm", "xml", "sql", "db", "sqlite", "lua", "sh", "md", "rst",
    "gz", "zip", "tar", "bz2", "xz", "pdf", "png", "jpg", "jpeg", "gif", "svg", "pkl", "pickle", "parquet",
    "npy", "lock", "pid", "sock", "tmp", "bak", "out", "err", "env", "pem", "crt", "key",
})
_HOST_SIGN = re.compile(r"[.\-\d]")
_DIGIT_OR_HYPHEN = re.compile(r"[\-\d]")
_HOST_CONTEXT = re.compile(
    rf"(?i:{_START}(?:host\s?name|host|resolve|resolving|lookup|connect(?:ing|ion)?\s+to(?:\s+server\s+at|\s+host)?"
    r"|server\s+at))"
    rf"(\s*[:=]?\s*)([\"']?)({_HOST})\2{_HOST_END}"
)
_NODE_HOST = re.compile(rf"(?<=[\w.+\-]@)(?=[A-Za-z0-9\-]*[\d\-]){_LABEL}(?![\w@\-<]|\.[A-Za-z0-9<])")
_EC2_HOST = re.compile(r"(?<![\w.\->])ip(?:-\d{1,3}){4}(?![\w\-<]|\.[A-Za-z0-9<])")
_HOST_PORT = re.compile(rf"(?<![\w.@/:\->])({_HOST}):(?=\d{{1,5}}(?!\w|<|\.\d))")
_DOTTED = re.compile(rf"(?<![\w.@/:\->]){_LABEL}(?:\.{_LABEL}){{1,10}}{_HOST_END}")


def _is_dotted_host(name: str) -> bool:
    labels = name.lower().split(".")
    last = labels[-1]
    if len(labels) < 2 or last in _FILE_EXTENSIONS:
        return False
    if last in _STRONG_TLDS or any("-" in label for label in labels[:-1]):
        return True
    return last in _WEAK_TLDS and (len(labels) >= 3 or bool(_DIGIT_OR_HYPHEN.search(name)))


def _context_host(match: re.Match[str]) -> str:
    separator, quote, name = match.group(1), match.group(2), match.group(3)
    after = match.string[match.end(): match.end() + 2]
    if quote or (after[:1] == ":" and after[1:].isdigit()) or _HOST_SIGN.search(name):
        prefix = match.group(0)[: match.start(1) - match.start(0)]
        return f"{prefix}{separator}{quote}<host>{quote}"
    return match.group(0)


def _host_port(match: re.Match[str]) -> str:
    name = match.group(1)
    if "." in name:
        is_host = name.rsplit(".", 1)[1].lower() not in _FILE_EXTENSIONS
    else:
        is_host = name.lower() == "localhost" or bool(_DIGIT_OR_HYPHEN.search(name))
    return "<host>:" if is_host else match.group(0)


_HOSTS: tuple[tuple[re.Pattern[str], _Replacement], ...] = (
    (_HOST_CONTEXT, _context_host),
    (_NODE_HOST, "<host>"),
    (_EC2_HOST, "<host>"),
    (_HOST_PORT, _host_port),
    (_DOTTED, lambda m: "<host>" if _is_dotted_host(m.group(0)) else m.group(0)),
)

# Step 5: quoted strings.
_QUOTED = re.compile(rf"""{_START}(?:'([^'\n]{{0,300}})'|"([^"\n]{{0,300}})"){_END}""")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,40}")
_VALUE_CONTEXT = re.compile(
    r"""(?:(?<![=!<>])=|['"]\s*:|(?i:(?<![\w>])(?:base\s+(?:\d+|<n>)|float|int|complex|decimal|string|literal"""
    r"""|value|input|type\s+\w+))\s*:)\s*\Z"""
)
_VALUE_CONTEXT_WINDOW = 40
# An exception's repr inside a message (``NewConnectionError('...: [Errno 111] Connection refused')``):
# its argument is a message, normalized like one, not a value.
_NESTED_EXCEPTION = re.compile(
    r"(?<![\w>/\\.\-])[A-Z][A-Za-z_]*(?:Error|Exception|Warning|Timeout|Disconnected|Failure|Fault)\(\s*\Z"
)

# Step 6: paths.
_PATH = re.compile(r"(?<![\w/.>])(?:[A-Za-z]:)?(?:[/\\][\w.\-~]+){2,}[/\\]?")
_TEMP_NAME = r"(?<![A-Za-z0-9>])tmp[a-z0-9_]{8}(?![A-Za-z0-9_<])"
_PATH_IS_DATA = re.compile(rf"\d|{_TEMP_NAME}")

# Step 7: opaque ids.
_K8S = "[bcdfghjklmnpqrstvwxz2456789]"
_BASE64_LIKE = re.compile(r"(?<![A-Za-z0-9+/=>])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=<])")


def _base64_like(match: re.Match[str]) -> str:
    token = match.group(0)
    upper = sum(c.isupper() for c in token)
    lower = sum(c.islower() for c in token)
    has_marker = any(c.isdigit() or c in "+/=" for c in token)
    return "<id>" if has_marker and upper * 4 >= upper + lower and lower * 4 >= upper + lower else token


_IDS: tuple[tuple[re.Pattern[str], _Replacement], ...] = (
    (re.compile(_TEMP_NAME), "<id>"),
    # a Kubernetes pod's ReplicaSet hash and random suffix, in Kubernetes' vowel-free alphabet
    (re.compile(rf"(?<=[A-Za-z0-9]-){_K8S}{{8,10}}-{_K8S}{{5}}(?![\w\-<])"), "<id>"),
    (  # ULID: a 48-bit time and 80 random bits in Crockford's base32
        re.compile(r"(?<![A-Za-z0-9>])[0-7](?=[0-9]*[A-Za-z])[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}(?![A-Za-z0-9<])"),
        "<id>",
    ),
    (_BASE64_LIKE, _base64_like),
    (
        re.compile(
            r"(?<![A-Za-z0-9>])(?:(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,}"
            r"|(?=[0-9A-F]*[A-F])(?=[0-9A-F]*\d)[0-9A-F]{7,})(?![A-Za-z0-9<])"
        ),
        "<id>",
    ),
)

# Step 8: words with digits.
_WORD = re.compile(r"(<[a-z0-9]+>)|(?:(?<![A-Za-z0-9_>)\]])-(?=\d))?([A-Za-z0-9]+)")
_DIGIT_RUN = re.compile(r"\d+")
_SINGLE_RUN = re.compile(r"([A-Za-z]*)(\d+)([A-Za-z]*)")


def _word(match: re.Match[str]) -> str:
    word = match.group(2)
    if word is None:  # a placeholder from an earlier step
        return match.group(0)
    runs = _DIGIT_RUN.findall(word)
    if not runs:
        return match.group(0)
    if word.isdigit():
        return "<n>"
    if len(runs) > 1:
        return "<id>" if len(word) >= 5 or word[0].isdigit() else match.group(0)
    parts = _SINGLE_RUN.fullmatch(word)
    if parts is None:  # unreachable: one digit run, letters around it
        return "<id>"
    before, digits, after = parts.groups()
    if not before:
        return f"<n>{after}"
    return match.group(0) if len(digits) <= 3 else f"{before}<n>{after}"


_WORDS: tuple[tuple[re.Pattern[str], _Replacement], ...] = (
    (_WORD, _word),
    (re.compile(r"<n>(?:[.,]<n>|[eE][+-]?<n>)+"), "<n>"),
)
_SPACES = re.compile(r"\s+")


def _apply(steps: Iterable[tuple[re.Pattern[str], _Replacement]], text: str) -> str:
    for pattern, replacement in steps:
        text = pattern.sub(replacement, text)
    return text


def _is_data(token: str) -> bool:
    """Whether steps 7 and 8 would change ``token`` (it holds a number or an id)."""
    return _apply(_WORDS, _apply(_IDS, token)) != token


def _quoted(match: re.Match[str]) -> str:
    single, double = match.group(1), match.group(2)
    quote, content = ("'", single) if single is not None else ('"', double)
    window = match.string[max(0, match.start() - _VALUE_CONTEXT_WINDOW): match.start()]
    if _NESTED_EXCEPTION.search(window):
        return f"{quote}{_QUOTED.sub(_quoted, content)}{quote}"
    if _IDENTIFIER.fullmatch(content) and not _is_data(content) and not _VALUE_CONTEXT.search(window):
        return match.group(0)
    return f"{quote}<str>{quote}"


def _path(match: re.Match[str]) -> str:
    return "<path>" if _PATH_IS_DATA.search(match.group(0)) else match.group(0)


_STEPS: tuple[tuple[re.Pattern[str], _Replacement], ...] = (
    (_SPACES, " "),
    *_STRUCTURED,
    *_HTTP_STATUS,
    *_HOSTS,
    (_QUOTED, _quoted),
    (_PATH, _path),
    *_IDS,
    *_WORDS,
)


def normalize_message(message: str | bytes) -> str:
    """The message with secrets redacted and variable data replaced by placeholders.

    The rules, in order, are in this module's docstring. Applying it twice changes nothing more.
    """
    text = _apply(_STEPS, redact(message, limit=MESSAGE_LIMIT)).strip()
    if len(text) > MESSAGE_LIMIT:  # placeholders made it longer: cut again, at a space, so a second pass agrees
        text = text[:MESSAGE_LIMIT]
        space = text.rfind(" ", MESSAGE_LIMIT - 100)
        text = text[:space] if space > 0 else text
    return text
