"""The deployment files, checked without a Docker engine: compose structure and the Dockerfile's install."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
LONG_RUNNING = ["redis", "postgres", "api", "persister", "nginx"]


def test_every_service_the_stack_needs_is_there() -> None:
    assert {"redis", "postgres", "migrate", "api", "persister", "nginx"} <= set(SERVICES)


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_healthchecks(name: str) -> None:
    check = SERVICES[name]["healthcheck"]
    assert check["test"][0] == "CMD"
    assert check["interval"] and check["retries"] >= 1


def test_replicas() -> None:
    assert SERVICES["api"]["deploy"]["replicas"] >= 3
    assert SERVICES["persister"]["deploy"]["replicas"] >= 2


def test_redis_keeps_an_append_only_file_on_a_volume() -> None:
    command = SERVICES["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert any(v.endswith(":/data") for v in SERVICES["redis"]["volumes"])
    assert any(v.startswith("pg-data:") for v in SERVICES["postgres"]["volumes"])
    assert {"redis-data", "pg-data"} <= set(COMPOSE["volumes"])


def test_startup_order_waits_for_health_and_the_migration() -> None:
    for name in ("api", "persister"):
        deps = SERVICES[name]["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert SERVICES["migrate"]["restart"] == "no"
    assert SERVICES["nginx"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_one_published_port_in_front_of_the_api() -> None:
    published = [name for name, svc in SERVICES.items() if svc.get("ports")]
    assert published == ["nginx"]
    assert "api:8000" in (ROOT / "deploy" / "nginx.conf").read_text()


def test_the_environment_names_only_settings_the_code_reads() -> None:
    known = {f"PM_{name.upper()}" for name in Settings.model_fields}
    for name in ("api", "persister", "migrate"):
        env = SERVICES[name]["environment"]
        pm_vars = {k for k in env if k.startswith("PM_")}
        assert {"PM_REDIS_URL", "PM_DATABASE_URL", "PM_ADMIN_TOKEN", "PM_KEY_PREFIX"} <= pm_vars
        assert pm_vars <= known, pm_vars - known
    # production refuses a placeholder admin token, so compose must require a real one
    assert SERVICES["api"]["environment"]["PM_ENVIRONMENT"] == "production"


def test_every_variable_compose_reads_is_in_env_example() -> None:
    used = set(re.findall(r"\$\{([A-Z_]+)", (ROOT / "docker-compose.yml").read_text()))
    example = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert used <= example, used - example


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) >= 2 and all("slim" in s for s in stages)
    assert re.search(r"^USER (?!root)\S+", text, re.M)
    assert "pip install -e" not in text and "--editable" not in text
    assert "HEALTHCHECK" in text


@pytest.mark.slow
def test_the_dockerfile_install_works_in_a_fresh_venv(tmp_path: Path) -> None:
    """Mirror the Dockerfile: build the wheel, install it non-editable, find the Lua scripts, run the CLI."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "--wheel-dir", str(wheels), str(ROOT)], check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    (wheel,) = wheels.glob("predmarket-*.whl")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    # The project's dependencies come from the test environment; the project itself from the wheel.
    deps = subprocess.run([sys.executable, "-c", "import redis, os; print(os.path.dirname(os.path.dirname("
                           "redis.__file__)))"], capture_output=True, text=True, check=True).stdout.strip()
    env = {**os.environ, "PYTHONPATH": deps}
    probe = ("import engine, lua, engine.scripts as s; assert 'site-packages' in engine.__file__, engine.__file__; "
             f"assert str(lua.SCRIPT_DIR).startswith({str(venv)!r}); import record.database as d; "
             "assert list((d.MIGRATIONS / 'versions').glob('0001_*.py')); assert (d.MIGRATIONS / 'env.py').exists(); "
             "import predmarket.commands.serve, api.routes.trades; print(len(s.sources()))")
    out = subprocess.run([python, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) >= 10
    version = subprocess.run([venv / "bin" / "predmarket", "--version"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, check=True)
    assert version.stdout.startswith("predmarket ")
