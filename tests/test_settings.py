"""Settings from the environment: platform names, TLS Redis URLs, embedded defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from formy_async.settings import Settings
from formy_async.store.connections import arq_redis_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "FORMY_REDIS_URL", "COMFYUI_URL", "FORMY_COMFYUI_URL", "PORT"):
        monkeypatch.delenv(name, raising=False)


def test_platform_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache:6380/2")
    monkeypatch.setenv("COMFYUI_URL", "http://gpu-1:8188")
    monkeypatch.setenv("PORT", "5000")
    settings = Settings()
    assert (str(settings.redis_url), settings.comfyui_base, settings.port) == (
        "redis://cache:6380/2",
        "http://gpu-1:8188",
        5000,
    )


def test_prefixed_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORMY_MAX_JOBS", "7")
    assert Settings().max_jobs == 7


def test_a_dotenv_file_is_read_under_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("PORT=5001\nexport FORMY_MAX_JOBS=9\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PORT", "5002")
    settings = Settings()
    assert (settings.port, settings.max_jobs) == (5002, 9)
    assert Settings(_env_file=None).max_jobs != 9


def test_a_value_given_to_the_constructor_comes_before_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORT", "5002")
    assert (Settings(port=5003).port, Settings(PORT=5004).port) == (5003, 5004)


def test_a_blank_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORMY_PORT", "")
    monkeypatch.setenv("PORT", "5005")
    monkeypatch.setenv("FORMY_HOST", "")
    monkeypatch.delenv("HOST", raising=False)
    settings = Settings()
    assert (settings.port, settings.host) == (5005, "0.0.0.0")


def test_names_are_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("formy_max_jobs", "11")
    assert Settings().max_jobs == 11


def test_unset_redis_and_comfyui_mean_embedded() -> None:
    settings = Settings()
    assert settings.uses_embedded_redis() and settings.uses_embedded_comfyui()


def test_tls_redis_url_is_accepted_with_certificate_checks_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://:secret@example.com:6380")
    rs = arq_redis_settings(Settings())
    assert (rs.ssl, rs.ssl_cert_reqs, rs.ssl_check_hostname) == (True, "required", True)


def test_self_signed_tls_redis_can_skip_certificate_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://:secret@example.com:6380")
    monkeypatch.setenv("FORMY_REDIS_SSL_CERT_REQS", "none")
    rs = arq_redis_settings(Settings())
    assert (rs.ssl, rs.ssl_cert_reqs, rs.ssl_check_hostname) == (True, "none", False)


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "http://not-redis")
    with pytest.raises(ValidationError, match="REDIS_URL"):
        Settings()


def test_user_weights_are_read_as_user_equals_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORMY_USER_WEIGHTS", "alice=2, bob=0.5")
    settings = Settings()
    assert (settings.weight("alice"), settings.weight("bob"), settings.weight("carol")) == (
        2.0,
        0.5,
        1.0,
    )


@pytest.mark.parametrize("bad", ["alice=0", "alice=-1", "alice=lots"])
def test_a_weight_that_is_not_a_positive_number_is_refused(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("FORMY_USER_WEIGHTS", bad)
    with pytest.raises(ValidationError):
        Settings()
