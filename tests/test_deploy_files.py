"""The deploy files (app.json, railway.json, render.yaml, Dockerfile, docker-compose.yml) agree with
the Procfile, the settings and the app's routes.

No Docker engine runs on the development machines (the CLI is there, the daemon is not), so the
compose stack is brought up only where one does; everywhere the files are checked as text.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from formy_async.auth import mint_token
from formy_async.cli import _parser
from formy_async.client.api import FormyClient
from formy_async.settings import Settings
from formy_async.web.app import create_app

from .conftest import ROOT

#: what the image's interpreter reads, not the app
INTERPRETER_ENV = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
STORAGE_DIR = "/app/data"


def settings_env_names() -> set[str]:
    """Every environment variable `Settings` reads: FORMY_<FIELD>, and the platform names."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        if isinstance(field.validation_alias, AliasChoices):
            names.update(str(choice) for choice in field.validation_alias.choices)
        else:
            names.add(f"FORMY_{name.upper()}")
    return names


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(
        (kind.strip(), command.strip())
        for kind, _, command in (line.partition(":") for line in lines if line.strip())
    )


def get_routes() -> set[str]:
    app = create_app(Settings(workflows_dir=ROOT / "workflows", secret_key="x" * 32))
    return {resource.canonical for resource in app.router.resources()}


def load_yaml(name: str) -> Any:
    return yaml.safe_load((ROOT / name).read_text())


def load_json(name: str) -> Any:
    return json.loads((ROOT / name).read_text())


def assert_settings_accept(values: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The values a file sets are ones the settings parse."""
    for key in settings_env_names():
        monkeypatch.delenv(key, raising=False)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    Settings(_env_file=None)  # type: ignore[call-arg]


def assert_entry_point(command: str) -> None:
    """`command` runs something that exists: server.py, a formy-async subcommand, an arq check."""
    argv = shlex.split(command)
    if argv[0] == "python":
        assert (ROOT / argv[1]).is_file(), command
    elif argv[0] == "formy-async":
        _parser().parse_args(argv[1:])  # exits (SystemExit) on an unknown subcommand or option
    elif argv[0] == "arq":
        module, _, attribute = argv[-1].rpartition(".")
        assert (ROOT / f"{module}.py").is_file(), command
        assert f"{attribute} =" in (ROOT / f"{module}.py").read_text(), command
    else:
        raise AssertionError(f"unknown entry point: {command}")


# --- the Procfile and requirements.txt ---------------------------------------------------------


def test_procfile_commands_are_entry_points() -> None:
    assert set(procfile()) == {"web", "worker"}
    for command in procfile().values():
        assert_entry_point(command)


def test_requirements_install_the_project_itself() -> None:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    assert [line for line in lines if line.strip() and not line.startswith("#")] == [".[server]"]


# --- Heroku ------------------------------------------------------------------------------------


def test_app_json_runs_the_procfile_with_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    app = load_json("app.json")
    assert set(app["formation"]) == set(procfile())
    assert any(addon["plan"].startswith("heroku-redis:") for addon in app["addons"])
    env = app["env"]
    assert set(env) <= settings_env_names()
    assert all(spec.get("description") for spec in env.values())
    assert env["COMFYUI_URL"]["required"] is True
    assert env["SECRET_KEY"]["generator"] == "secret"
    assert env["FORMY_REDIS_SSL_CERT_REQS"]["value"] == "none"  # Heroku's self-signed TLS
    assert env["FORMY_STORAGE_BACKEND"]["value"] == "s3"  # dynos share no disk
    assert int(env["FORMY_SHUTDOWN_GRACE"]["value"]) < 30  # Heroku kills 30 s after SIGTERM
    fixed = {key: spec["value"] for key, spec in env.items() if "value" in spec}
    assert_settings_accept(fixed, monkeypatch)


# --- Railway -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(p.name for p in ROOT.glob("railway*.json")))
def test_railway_config_runs_a_procfile_process(path: str) -> None:
    deploy = load_json(path)["deploy"]
    assert deploy["startCommand"] in procfile().values()
    assert_entry_point(deploy["startCommand"])
    if deploy["startCommand"] == procfile()["web"]:
        assert deploy["healthcheckPath"] == "/readyz"
        assert deploy["healthcheckPath"] in get_routes()
    else:
        assert "healthcheckPath" not in deploy  # nothing listens in a worker


def test_railway_builds_the_dockerfile() -> None:
    build = load_json("railway.json")["build"]
    assert build["builder"] == "DOCKERFILE"
    assert (ROOT / build["dockerfilePath"]).is_file()


# --- Render ------------------------------------------------------------------------------------


def render_services() -> dict[str, dict[str, Any]]:
    return {service["type"]: service for service in load_yaml("render.yaml")["services"]}


def render_env(service: dict[str, Any]) -> list[dict[str, Any]]:
    groups = {group["name"]: group["envVars"] for group in load_yaml("render.yaml")["envVarGroups"]}
    env: list[dict[str, Any]] = []
    for entry in service["envVars"]:
        env.extend(groups[entry["fromGroup"]] if "fromGroup" in entry else [entry])
    return env


def test_render_blueprint_runs_the_procfile_on_key_value() -> None:
    services = render_services()
    assert set(services) == {"web", "worker", "keyvalue"}
    assert services["web"]["dockerCommand"] == procfile()["web"]
    assert services["worker"]["dockerCommand"] == procfile()["worker"]
    assert services["web"]["healthCheckPath"] in get_routes()
    redis = services["keyvalue"]
    assert redis["maxmemoryPolicy"] == "noeviction"  # an evicted job key is a lost job
    assert redis["ipAllowList"] == []
    for kind in ("web", "worker"):
        (redis_url,) = [e for e in render_env(services[kind]) if e.get("key") == "REDIS_URL"]
        assert redis_url["fromService"] == {
            "type": "keyvalue",
            "name": redis["name"],
            "property": "connectionString",
        }


def test_render_sets_only_settings_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    for kind in ("web", "worker"):
        env = render_env(render_services()[kind])
        assert {entry["key"] for entry in env} <= settings_env_names()
        assert_settings_accept(
            {e["key"]: str(e["value"]) for e in env if "value" in e}, monkeypatch
        )
    # sync: false in an environment group is ignored by Render
    for group in load_yaml("render.yaml")["envVarGroups"]:
        assert not any("sync" in entry for entry in group["envVars"])


# --- Dockerfile --------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def instruction(name: str) -> list[str]:
    return [arguments for kind, arguments in dockerfile() if kind == name]


def test_dockerfile_runs_the_web_process_as_non_root() -> None:
    assert instruction("FROM") == ["python:3.11-slim"]
    assert json.loads(instruction("CMD")[-1]) == shlex.split(procfile()["web"])
    assert instruction("EXPOSE") == [str(Settings.model_fields["port"].default)]
    user = instruction("USER")[-1]
    assert user.split(":")[0] not in {"root", "0"}


def test_dockerfile_healthcheck_polls_healthz_with_python() -> None:
    (healthcheck,) = instruction("HEALTHCHECK")
    argv = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert argv[:2] == ["python", "-c"]
    code = argv[2]
    compile(code, "<healthcheck>", "exec")
    assert "/healthz" in code and "/healthz" in get_routes()
    assert set(re.findall(r"environ\.get\('(\w+)'", code)) <= settings_env_names()


def test_dockerfile_copies_what_exists_and_is_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for arguments in instruction("COPY"):
        for source in arguments.split()[:-1]:
            assert (ROOT / source).exists(), source
            assert source not in ignored, source


def test_dockerfile_sets_only_settings_it_reads() -> None:
    pairs = [pair for arguments in instruction("ENV") for pair in arguments.split()]
    assert {pair.split("=", 1)[0] for pair in pairs} <= INTERPRETER_ENV | settings_env_names()


# --- docker compose ----------------------------------------------------------------------------


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = load_yaml("docker-compose.yml")["services"]
    return services


#: compose's `${NAME:?message}`: NAME must be set, else nothing starts and compose says why
REQUIRED = re.compile(r"\$\{(\w+):\?([^}]+)\}")


def interpolated(value: str, given: dict[str, str] | None = None) -> str:
    """Compose's `${NAME:-default}` with NAME unset; a required `${NAME:?…}` from `given`."""
    value = REQUIRED.sub(lambda m: (given or {})[m.group(1)], value)
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_compose_runs_the_procfile_and_the_simulator() -> None:
    services = compose_services()
    assert set(services) == {"web", "worker", "redis", "simulator"}
    assert shlex.join(services["web"]["command"]) == procfile()["web"]
    assert shlex.join(services["worker"]["command"]) == procfile()["worker"]
    simulator = shlex.join(services["simulator"]["command"])
    assert simulator == "formy-async simulator --host 0.0.0.0 --port 8188"
    assert_entry_point(simulator)
    assert services["web"]["ports"] == ["8080:8080"]


def test_compose_sets_only_settings_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    for kind in ("web", "worker"):
        env = compose_services()[kind]["environment"]
        assert set(env) <= settings_env_names()
        given = {"SECRET_KEY": "x" * 40}
        assert_settings_accept(
            {k: interpolated(str(v), given) for k, v in env.items()}, monkeypatch
        )
        assert interpolated(env["REDIS_URL"]).startswith("redis://redis:")
        assert interpolated(env["COMFYUI_URL"]) == "http://simulator:8188"


def test_compose_web_and_worker_share_the_storage_volume() -> None:
    services = compose_services()
    volumes = load_yaml("docker-compose.yml")["volumes"]
    for kind in ("web", "worker"):
        assert services[kind]["environment"]["FORMY_STORAGE_DIR"] == STORAGE_DIR
        (mount,) = services[kind]["volumes"]
        name, _, target = mount.partition(":")
        assert (name, target) == ("storage", STORAGE_DIR)
        assert name in volumes


def test_compose_redis_keeps_every_acknowledged_job() -> None:
    redis = compose_services()["redis"]
    assert redis["image"] == "redis:7"
    flags = dict(zip(redis["command"][1::2], redis["command"][2::2], strict=True))
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] in {"everysec", "always"}
    assert flags["--maxmemory-policy"] == "noeviction"
    (mount,) = redis["volumes"]
    assert mount.partition(":")[2] == "/data"


def test_compose_worker_health_is_arqs_check() -> None:
    worker = compose_services()["worker"]
    test = worker["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert shlex.join(test[1:]) == "arq --check worker_settings.WorkerSettings"
    assert_entry_point(shlex.join(test[1:]))
    # Docker's default of 10 s would SIGKILL jobs still inside FORMY_SHUTDOWN_GRACE
    grace = int(worker["environment"]["FORMY_SHUTDOWN_GRACE"])
    assert int(worker["stop_grace_period"].removesuffix("s")) > grace


def test_compose_refuses_to_start_without_a_secret() -> None:
    """`${SECRET_KEY:?…}`: compose stops with its message before any container starts, where
    an empty secret made web exit and the worker crash, restarted forever."""
    for kind in ("web", "worker"):
        required = REQUIRED.fullmatch(compose_services()[kind]["environment"]["SECRET_KEY"])
        assert required, kind
        assert required.group(1) == "SECRET_KEY"
        assert ".env" in required.group(2)


def test_compose_one_liner_in_the_docs_makes_the_secret_it_needs() -> None:
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    secret = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
    line = f'test -f .env || echo "SECRET_KEY=$({secret})" > .env'
    assert line in deploy
    assert line in (ROOT / "docker-compose.yml").read_text()


def docker_engine() -> str | None:
    """Why the compose stack cannot be brought up here, or None when it can."""
    if shutil.which("docker") is None:
        return "no Docker CLI on this machine"
    if subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode != 0:
        return "no Docker engine runs on this machine (the CLI is here, not the daemon)"
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60)
    return None if version.returncode == 0 else "the Docker CLI here has no compose plugin"


@pytest.mark.timeout(900)
async def test_compose_up_brings_up_a_stack_that_runs_a_job() -> None:
    """Where an engine runs: the documented steps, then a job through the API. Elsewhere the
    tests above check the files instead."""
    if (missing := docker_engine()) is not None:
        pytest.skip(f"{missing}: the compose file is validated above instead")
    secret = "compose-test-" + "0123456789abcdef" * 3
    compose = ["docker", "compose", "--project-name", "formy-compose-test"]
    env = {**os.environ, "SECRET_KEY": secret}
    up = [*compose, "up", "--build", "--detach", "--wait"]
    try:
        await asyncio.to_thread(subprocess.run, up, cwd=ROOT, env=env, check=True, timeout=800)
        token = mint_token(secret, "alice", ttl=600)
        async with FormyClient("http://127.0.0.1:8080", token=token) as client:
            job = await client.submit("text_to_image", prompt="a fox", steps=2, width=64, height=64)
            assert (await client.wait(job.id)).status == "done"
    finally:
        down = [*compose, "down", "--volumes"]
        await asyncio.to_thread(subprocess.run, down, cwd=ROOT, env=env, timeout=120)
