"""Identifier quoting, URI checks and secret redaction (no database needed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanpipe.errors import ConfigError
from cleanpipe.sources import check_uri, describe_uri, quote_ident, redact
from cleanpipe.sources._sql import error_line, qualified, strip_query


def _unquote(quoted: str) -> str:
    assert quoted[0] == quoted[-1] == '"'
    inner = quoted[1:-1]
    # Outside doubled pairs there is no lone double quote that could end the identifier.
    assert inner.replace('""', "").count('"') == 0
    return inner.replace('""', '"')


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1).filter(lambda s: "\x00" not in s))
def test_quote_ident_round_trips_and_never_ends_early(name):
    assert _unquote(quote_ident(name)) == name


@pytest.mark.parametrize("name, quoted", [
    ("plain", '"plain"'),
    ('x"; DROP TABLE x; --', '"x""; DROP TABLE x; --"'),
    ("semi;colon", '"semi;colon"'),
    ("it's", '"it\'s"'),
])
def test_quote_ident_known_answers(name, quoted):
    assert quote_ident(name) == quoted


@pytest.mark.parametrize("bad", ["", "a\x00b"])
def test_quote_ident_rejects_empty_and_nul(bad):
    with pytest.raises(ConfigError, match="table"):
        quote_ident(bad, key="table")


def test_qualified_and_strip_query():
    assert qualified("t", "s") == '"s"."t"'
    assert qualified("t") == '"t"'
    assert strip_query("  SELECT 1 ;; \n") == "SELECT 1"


@pytest.mark.parametrize("uri", [
    "postgresql://me:hunter2@db:5432/x",
    "postgres://me:@db/x",
    "postgresql://me@db/x?password=hunter2",
    "postgresql://me@db/x?sslmode=require&PASSWORD=hunter2",
])
def test_check_uri_rejects_passwords(uri):
    with pytest.raises(ConfigError, match="PGPASSWORD") as err:
        check_uri(uri, key="[source] uri")
    assert "hunter2" not in str(err.value)
    assert "[source] uri" in str(err.value)


def test_check_uri_accepts_passwordless_and_rejects_other_schemes():
    check_uri("postgresql://me@db:5432/x?sslmode=require")
    with pytest.raises(ConfigError, match="postgresql://"):
        check_uri("mysql://me@db/x")


def test_redact_masks_uri_passwords_params_and_env_secrets(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "s3cret-value")
    text = ("postgresql://u:pw1@h/d and host=h password=pw2 user=u, and the env one s3cret-value; "
            "https://a:b@c/")
    out = redact(text)
    for secret in ("pw1", "pw2", "s3cret-value", ":b@"):
        assert secret not in out
    assert "postgresql://u:***@h/d" in out


def test_describe_uri_from_environment_has_no_password(monkeypatch):
    for k, v in {"PGHOST": "dbhost", "PGPORT": "6543", "PGUSER": "alice", "PGDATABASE": "prod",
                 "PGPASSWORD": "topsecret"}.items():
        monkeypatch.setenv(k, v)
    text = describe_uri(None)
    assert "alice@dbhost:6543/prod" in text and "topsecret" not in text


def test_error_line_keeps_first_line_only(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "topsecret")
    exc = RuntimeError("failed for topsecret\nQuery was: SELECT 'other stuff'")
    assert error_line(exc) == "failed for ***"
