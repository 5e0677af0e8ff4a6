"""SQL identifier quoting and secret redaction, shared by the DuckDB and PostgreSQL adapters.

Identifiers (table, schema and column names) are the only user text that is spliced into SQL, and
only through :func:`quote_ident`; values always travel as bound parameters.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, unquote

from ..errors import ConfigError

#: Environment variables whose values are secrets: scrubbed from every message we print.
SECRET_ENV = ("PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
#: What a secret is replaced by.
MASK = "***"

# user:password@ inside a URI, and password=... as a URI query or libpq keyword parameter.
_URI_PASSWORD = re.compile(r"(?P<pre>[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)[^@\s]*@")
# password= (libpq), secret_key= / session_token= (pyarrow's S3 URI options)
_KW_PASSWORD = re.compile(r"(?i)(?P<pre>\b(?:password|secret_key|session_token)\s*=\s*)('[^']*'|[^&\s]*)")


def quote_ident(name: str, *, key: str = "identifier") -> str:
    """Quote ``name`` as a single SQL identifier.

    The standard SQL rule that PostgreSQL and DuckDB both follow: wrap the name in double quotes
    and double every double quote inside it, so that no character of ``name`` can end the
    identifier early (``x"; DROP TABLE y; --`` stays one, oddly named, table).

    Parameters
    ----------
    name : str
        The identifier, exactly as the table or column is (to be) called.
    key : str, default="identifier"
        The setting ``name`` came from, for the error message.

    Returns
    -------
    str

    Raises
    ------
    ConfigError
        An empty name or one holding a NUL character (which no database can store).

    Examples
    --------
    >>> quote_ident('my "odd" table')
    '"my ""odd"" table"'
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{key} is empty; give the table or schema name")
    if "\x00" in name:
        raise ConfigError(f"{key} {name!r} holds a NUL character; remove it")
    return '"' + name.replace('"', '""') + '"'


def qualified(table: str, schema: str | None = None, *, key: str = "table") -> str:
    """``"schema"."table"`` (or ``"table"``), each part quoted with :func:`quote_ident`."""
    quoted = quote_ident(table, key=key)
    return quoted if schema is None else f"{quote_ident(schema, key='schema')}.{quote_ident(table, key=key)}"


def strip_query(query: str) -> str:
    """A query without trailing semicolons and blanks, so it can be wrapped as a subquery."""
    return query.strip().rstrip(";").strip()


def redact(text: str, secrets=()) -> str:
    """``text`` with passwords in URIs, ``password=`` parameters and known secrets masked.

    Known secrets are ``secrets`` plus the values of :data:`SECRET_ENV` in the environment.

    Examples
    --------
    >>> redact("postgresql://me:hunter2@db/x")
    'postgresql://me:***@db/x'
    """
    text = _URI_PASSWORD.sub(lambda m: m.group("pre") + MASK + "@", str(text))
    text = _KW_PASSWORD.sub(lambda m: m.group("pre") + MASK, text)
    values = [os.environ.get(name) for name in SECRET_ENV] + list(secrets)
    # Longest first, so a secret that contains another is masked whole.
    for value in sorted({v for v in values if v and len(v) >= 3}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def error_line(exc: BaseException, secrets=()) -> str:
    """The first line of a driver error, redacted (drivers append the query on later lines)."""
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return redact(line, secrets)


def split_uri(uri: str) -> dict:
    """The parts of a ``postgresql://`` URI as libpq reads them.

    ``#`` has no special meaning to libpq, so this does not use :func:`urllib.parse.urlsplit`,
    which would end the user info at a ``#`` and hide a password behind it (``u#:pw@host``).

    Returns
    -------
    dict
        ``user``, ``password`` (``None`` when absent), ``host``, ``port``, ``dbname`` (``""`` when
        absent) and ``params`` (the query parameters, keys lower-cased).
    """
    rest = uri.split("://", 1)[1] if "://" in uri else uri
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    userinfo, _, hostport = netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    path, _, query = tail.partition("?")
    params = {k.lower(): v for k, v in parse_qsl(query, keep_blank_values=True)}
    host, port = hostport, ""
    if not hostport.endswith("]") and ":" in hostport:
        host, _, port = hostport.rpartition(":")
    password = unquote(password) if sep else params.get("password")
    return {"user": unquote(user), "password": password, "host": unquote(host), "port": port,
            "dbname": unquote(path.lstrip("/")), "params": params}
