"""The deployment files, checked without a Docker engine: compose structure and the Dockerfile's install."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
import yaml
from predmarket.engine.keys import Keys
from predmarket.engine.settings import Settings
from predmarket.persister.recover import delete_prefix
from predmarket.record.database import drop_database
from sqlalchemy.engine import make_url

from tests.support.network import answers_200, free_port
from tests.support.services import PG_SERVER_URL, REDIS_URL
from tests.support.waiting import wait_until

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


# --------------------------------------------------------------------------- the image, built without a daemon
#
# No Docker engine runs where the suite runs, so the image is rebuilt by hand: the build context is exactly
# what the Dockerfile's build stage COPYs (less what .dockerignore drops), the wheel is built from it as
# `pip wheel .` does there, and installed into a fresh virtualenv as the runtime stage installs it. Every
# command the compose file runs is then started from that install, from a directory outside the checkout.

BUILD_CONTEXT_COPY = re.compile(r"^COPY\s+(?!--from)(.+)$", re.M)


def _build_stage(dockerfile: str) -> str:
    """The Dockerfile's first stage (up to the second FROM): the one that copies the sources."""
    stages = re.split(r"^FROM ", dockerfile, flags=re.M)
    return stages[1]


def _dockerignored(patterns: list[str], relative: str) -> bool:
    for pattern in patterns:
        if fnmatch.fnmatch(relative, pattern):
            return True
        if pattern.startswith("**/") and fnmatch.fnmatch(relative, f"*/{pattern[3:]}"):
            return True
    return False


def copy_build_context(root: Path, target: Path) -> list[str]:
    """Copy what the build stage's COPY lines copy from ``root`` into ``target``; returns the sources."""
    ignore_file = root / ".dockerignore"
    patterns = [line.strip() for line in ignore_file.read_text().splitlines()
                if line.strip() and not line.startswith("#")] if ignore_file.exists() else []
    sources: list[str] = []
    for line in BUILD_CONTEXT_COPY.findall(_build_stage((root / "Dockerfile").read_text())):
        *srcs, dest = [token for token in shlex.split(line) if not token.startswith("--")]
        for src in srcs:
            destination = target / dest / src if dest.endswith("/") or len(srcs) > 1 else target / dest
            destination.parent.mkdir(parents=True, exist_ok=True)
            if (root / src).is_dir():
                def ignore(directory: str, names: list[str]) -> set[str]:
                    base = Path(directory).relative_to(root)
                    return {n for n in names if _dockerignored(patterns, str(base / n))}
                shutil.copytree(root / src, destination, ignore=ignore)
            else:
                shutil.copy2(root / src, destination)
            sources.append(src)
    return sources


def test_the_build_context_is_read_from_the_dockerfile(tmp_path: Path) -> None:
    """The parser behind the image test: files and directories land where COPY puts them, ignores apply."""
    (tmp_path / "src" / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "a.py").write_text("")
    (tmp_path / "src" / "pkg" / "__pycache__" / "a.pyc").write_text("")
    (tmp_path / "src" / "top.txt").write_text("")
    (tmp_path / "src" / "left-out").mkdir()
    (tmp_path / "src" / "Dockerfile").write_text(
        "FROM x AS build\nCOPY top.txt Dockerfile ./\nCOPY pkg pkg\nFROM y\nCOPY --from=build /w /w\n")
    (tmp_path / "src" / ".dockerignore").write_text("**/__pycache__\n")
    assert copy_build_context(tmp_path / "src", tmp_path / "ctx") == ["top.txt", "Dockerfile", "pkg"]
    assert sorted(str(p.relative_to(tmp_path / "ctx")) for p in (tmp_path / "ctx").rglob("*")) == [
        "Dockerfile", "pkg", "pkg/a.py", "top.txt"]


def _wait_for(check: Callable[[], bool], what: str, proc: subprocess.Popen[str], timeout_s: float = 30.0) -> None:
    wait_until(lambda: check() or proc.poll() is not None, timeout_s, what, interval_s=0.05)
    if not check():  # the process exited first
        out, err = proc.communicate()
        pytest.fail(f"{what}: the process exited {proc.returncode}\n{out[-2000:]}\n{err[-2000:]}")


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM, as docker stop sends; the exit code and stderr."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


@pytest.mark.slow
def test_the_image_as_the_dockerfile_builds_it_runs_every_command(tmp_path: Path) -> None:
    """Build the wheel from exactly the Dockerfile's COPYs, install it as the runtime stage does, and run
    ``--version``, ``migrate``, ``serve`` and ``persister`` from that install (a missing package fails here)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    build, runtime = _build_stage(dockerfile), dockerfile.split("FROM ")[2]
    # The build and install commands this test reproduces (without the network: dependencies are not rebuilt).
    assert re.search(r"^RUN pip wheel .*--wheel-dir /wheels \.$", build, re.M), build
    assert re.search(r"^RUN pip install .*--no-index --find-links /wheels predmarket\b", runtime, re.M), runtime
    context = tmp_path / "context"
    copy_build_context(ROOT, context)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "--wheel-dir", str(wheels), "."], cwd=context, check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", "--find-links", str(wheels), "predmarket"], check=True)
    # The dependencies come from the test environment, appended after the venv's own site-packages by a
    # .pth line (not PYTHONPATH, which would come first); .pth files are not read from an appended path,
    # so the checkout's editable install stays invisible.
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    prefix = f"pmtest-image-{uuid.uuid4().hex[:8]}"
    database = make_url(PG_SERVER_URL).set(database=f"pmtest_image_{uuid.uuid4().hex[:10]}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PM_", "PYTHON"))} | {
        "PM_REDIS_URL": REDIS_URL, "PM_DATABASE_URL": database.render_as_string(hide_password=False),
        "PM_KEY_PREFIX": prefix, "PM_HEARTBEAT_FILE": str(run_dir / "persister.alive"), "PYTHONUNBUFFERED": "1"}
    predmarket = str(venv / "bin" / "predmarket")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([predmarket, *args], cwd=run_dir, env=env, capture_output=True, text=True, timeout=60)

    probe = ("import predmarket.engine as engine, predmarket.lua as lua, predmarket.record.database as d, "
             "predmarket.engine.scripts as s; "
             f"assert engine.__file__.startswith({str(venv)!r}), engine.__file__; "
             f"assert str(lua.SCRIPT_DIR).startswith({str(venv)!r}); "
             "assert list((d.MIGRATIONS / 'versions').glob('0001_*.py')); import importlib.metadata as m; "
             "assert any(f.name == 'LICENSE' for f in m.files('predmarket')), 'no LICENSE in the wheel'; "
             "print(len(s.sources()))")
    out = subprocess.run([python, "-c", probe], cwd=run_dir, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout) >= 10
    # One import namespace: the wheel installs `predmarket` and nothing else at the top (no `api`, no `engine`
    # to collide with another project's), and the bench stays in the checkout.
    installed = {p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth", "__pycache__"))}
    assert installed == {"predmarket"}, installed
    assert not (site / "predmarket" / "bench").exists()
    bench = run("bench", "--quick")
    assert bench.returncode != 0 and "runs from a source checkout" in bench.stderr, bench.stderr[-2000:]
    try:
        version = run("--version")
        assert version.returncode == 0 and version.stdout.startswith("predmarket "), version.stderr[-2000:]
        migrated = run("migrate")
        assert migrated.returncode == 0 and "migrated" in migrated.stdout, migrated.stderr[-2000:]

        port = free_port()
        serve = subprocess.Popen([predmarket, "serve", "--port", str(port), "--no-access-log"], cwd=run_dir,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: answers_200(f"http://127.0.0.1:{port}/healthz"), "serve /healthz", serve)
        finally:
            code, err = _stop(serve)
        # uvicorn shuts down in order, then re-raises the signal it caught (so the exit code says SIGTERM).
        assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in err, err[-2000:]

        persister = subprocess.Popen([predmarket, "persister"], cwd=run_dir, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        try:
            _wait_for((run_dir / "persister.alive").exists, "persister heartbeat", persister)
        finally:
            code, err = _stop(persister)
        assert code == 0, err[-2000:]
    finally:
        drop_database(database.render_as_string(hide_password=False))
        client = sync_redis.Redis.from_url(REDIS_URL)
        delete_prefix(client, Keys(prefix))
        client.close()


# --------------------------------------------------------------------------- the Redis Cluster override

CLUSTER = yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())
CLUSTER_NODES = sorted(name for name in CLUSTER["services"] if re.fullmatch(r"redis-\d+", name))


def test_the_cluster_file_has_six_nodes_with_volumes_and_healthchecks() -> None:
    assert len(CLUSTER_NODES) == 6
    for name in CLUSTER_NODES:
        node = CLUSTER["services"][name]
        command = node["command"]
        assert command[command.index("--cluster-enabled") + 1] == "yes"
        assert command[command.index("--appendonly") + 1] == "yes"
        assert node["volumes"] == [f"{name}-data:/data"] and f"{name}-data" in CLUSTER["volumes"]
        assert node["healthcheck"]["test"][0] == "CMD"


def test_the_cluster_is_created_once_with_a_replica_per_master() -> None:
    init = CLUSTER["services"]["redis-cluster-init"]
    assert set(init["depends_on"]) == set(CLUSTER_NODES)
    script = init["command"][0]
    assert "cluster_state:ok" in script.split("||")[0]  # a restart finds the cluster formed
    create = shlex.split(script.split("||")[1])
    assert create[:3] == ["redis-cli", "--cluster", "create"]
    assert create[create.index("--cluster-replicas") + 1] == "1" and "--cluster-yes" in create
    assert sorted(re.findall(r"getent hosts (redis-\d+)", script)) == CLUSTER_NODES


@pytest.mark.parametrize("name", ["migrate", "api", "persister"])
def test_every_predmarket_service_runs_on_the_cluster(name: str) -> None:
    service = CLUSTER["services"][name]
    env = service["environment"]
    url = env["PM_REDIS_URL"]
    assert url.startswith("redis+cluster://")
    assert sorted(seed.split(":")[0] for seed in url.removeprefix("redis+cluster://").split(",")) == CLUSTER_NODES
    # The settings' own checks (a tagged prefix on a cluster), and a replica's confirmation asked for.
    settings = Settings(**{name.removeprefix("PM_").lower(): value for name, value in env.items()})
    assert settings.replica_acks == 1
    if name != "migrate":
        assert service["depends_on"]["redis-cluster-init"]["condition"] == "service_completed_successfully"
