"""Bearer tokens: what a verifier accepts, remembers, and refuses again once expired."""

from __future__ import annotations

import time

import jwt
import pytest

from formy_async.auth import TokenVerifier, mint_token, verify_token
from formy_async.errors import Unauthorized

from .conftest import TEST_SECRET


def test_a_good_token_gives_its_identity_every_time() -> None:
    verify = TokenVerifier(TEST_SECRET)
    token = mint_token(TEST_SECRET, "alice", admin=True)

    first, again = verify(token), verify(token)

    assert first == again
    assert (again.user, again.admin) == ("alice", True)


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    verify = TokenVerifier(TEST_SECRET)
    token = mint_token(TEST_SECRET, "alice", ttl=1)
    verify(token)

    time.sleep(max(0.0, (verify(token).expires_at or 0) - time.time()) + 0.05)

    with pytest.raises(Unauthorized) as refused:
        verify(token)
    assert refused.value.code == "token_expired"


def test_a_token_of_another_secret_is_refused_every_time() -> None:
    verify = TokenVerifier(TEST_SECRET)
    forged = mint_token("another secret of at least thirty-two characters", "alice")

    for _ in range(2):
        with pytest.raises(Unauthorized) as refused:
            verify(forged)
        assert refused.value.code == "token_invalid"


def test_the_oldest_tokens_are_forgotten_first() -> None:
    verify = TokenVerifier(TEST_SECRET, size=2)
    tokens = [mint_token(TEST_SECRET, user) for user in ("a", "b", "c")]

    users = [verify(token).user for token in tokens]

    assert users == ["a", "b", "c"]
    assert len(verify._accepted) == 2


def test_a_tokens_gpu_seconds_budget_comes_with_its_identity() -> None:
    token = mint_token(TEST_SECRET, "alice", gpu_seconds_per_day=600)

    assert verify_token(TEST_SECRET, token).gpu_seconds_per_day == 600.0
    assert verify_token(TEST_SECRET, mint_token(TEST_SECRET, "bob")).gpu_seconds_per_day is None


@pytest.mark.parametrize("budget", ["600", -1, True])
def test_a_gpu_seconds_budget_that_is_no_number_of_seconds_is_refused(budget: object) -> None:
    claims = {"sub": "alice", "exp": int(time.time()) + 60, "gpu_seconds_per_day": budget}
    token = jwt.encode(claims, TEST_SECRET, algorithm="HS256")

    with pytest.raises(Unauthorized) as refused:
        verify_token(TEST_SECRET, token)
    assert refused.value.code == "token_invalid"


def test_the_graphs_scope_lets_a_token_submit_graphs_without_being_admin() -> None:
    identity = verify_token(TEST_SECRET, mint_token(TEST_SECRET, "carol", graphs=True))
    assert (identity.graphs, identity.admin, identity.may_submit_graphs) == (True, False, True)
    plain = verify_token(TEST_SECRET, mint_token(TEST_SECRET, "dave"))
    assert plain.may_submit_graphs is False
    admin = verify_token(TEST_SECRET, mint_token(TEST_SECRET, "erin", admin=True, graphs=True))
    assert (admin.admin, admin.graphs) == (True, True)
