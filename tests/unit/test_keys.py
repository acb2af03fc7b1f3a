from __future__ import annotations

import hashlib

import pytest

from tenants.keys import hash_secret, new_token, parse_token, secret_matches
from tenants.scopes import ALL_SCOPES, Data, Scope, grants, parse_scopes, scope_for


def test_new_tokens_have_the_documented_shape_and_differ() -> None:
    a, b = new_token(), new_token()
    assert str(a).startswith(f"hub_{a.prefix}_")
    assert len(a.prefix) == 12
    assert len(a.secret) == 48
    assert a != b
    assert parse_token(str(a)) == a


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "hub_",
        "hub_abc_def",
        "key_0123456789ab_" + "0" * 48,
        "hub_0123456789ab_" + "0" * 47,
        "hub_0123456789AB_" + "0" * 48,
        "hub_0123456789ab_" + "0" * 48 + "_x",
    ],
)
def test_garbled_tokens_do_not_parse(raw: str) -> None:
    assert parse_token(raw) is None


def test_only_the_sha256_of_the_secret_is_compared() -> None:
    token = new_token()
    stored = hash_secret(token.secret)
    assert stored == hashlib.sha256(token.secret.encode()).digest()
    assert secret_matches(token.secret, stored)
    last = "1" if token.secret.endswith("0") else "0"
    assert not secret_matches(token.secret[:-1] + last, stored)


def test_scopes_parse_all_and_reject_unknown() -> None:
    assert parse_scopes(["all"]) == ALL_SCOPES
    assert parse_scopes(["tenants:read", "tenants:read"]) == {Scope.TENANTS_READ}
    with pytest.raises(ValueError, match="tenants:reed"):
        parse_scopes(["tenants:reed"])


def test_one_table_says_what_each_kind_of_data_needs() -> None:
    assert scope_for(Data.MESSAGES) == scope_for(Data.REPLIES) == Scope.MESSAGES_READ
    assert scope_for(Data.MONEY) == Scope.BILLING_READ
    assert scope_for(Scope.QUOTA_WRITE) == Scope.QUOTA_WRITE
    dashboard_only = frozenset({Scope.DASHBOARD_READ})
    assert not any(grants(dashboard_only, kind) for kind in Data)
    assert grants(frozenset({Scope.BILLING_READ}), Data.MONEY)
