"""Configuration: one source (Settings), typos stop the process, production refuses shipped or short tokens.

The contract (API.md, "Precise rules" -> "Configuration"): a ``PM_*`` variable
that is not a known setting stops the process with a message naming it;
``PM_ENVIRONMENT=production`` refuses an admin token shorter than 32 characters
or equal to any value shipped in the repository.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path

import pydantic
import pytest
from predmarket.engine.settings import TEST_ONLY_NAMES, Settings, known_names, redacted, unknown_names

from tests.support.network import free_port
from tests.support.processes import run_predmarket

ROOT = Path(__file__).resolve().parents[1]
#: Files shipped with the project that may show an admin token to copy.
SHIPPED = [ROOT / ".env.example", ROOT / "docker-compose.yml", ROOT / "README.md", ROOT / "Makefile",
           *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "deploy").iterdir()),
           *sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "predmarket").rglob("*.py"))]
TOKEN_VALUE = re.compile(r"""PM_ADMIN_TOKEN["']?\s*[=:]\s*["']?([^\s"'$,}]+)""")
NOT_SERVICES = {"PM_REDIS_URL": "redis://127.0.0.1:1/0", "PM_DATABASE_URL": "postgresql+psycopg://x@127.0.0.1:1/x"}


def clean_env(**pm: str) -> dict[str, str]:
    """This process's environment without any PM_* variable, plus ``pm``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PM_")}
    env.update(pm)
    return env


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # A process that does not stop on its own (the old behaviour: a typo ignored) fails the test by timeout.
    return run_predmarket(*command, env=env, timeout_s=60)


# --------------------------------------------------------------------------- unknown names

@pytest.mark.parametrize("command", [["serve"], ["persister"]])
@pytest.mark.parametrize("misspelt", ["PM_REDIS_ULR", "PM_RATE_LIMT_PER_S"])
def test_a_misspelt_variable_stops_the_process_naming_it(command: list[str], misspelt: str) -> None:
    if command[0] == "serve":
        command = ["serve", "--port", str(free_port())]
    result = run(command, clean_env(**{misspelt: "1"}))
    assert result.returncode == 2, result.stderr
    assert misspelt in result.stderr
    assert "unknown setting" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_message_suggests_the_setting_meant(monkeypatch: pytest.MonkeyPatch) -> None:
    assert unknown_names({"PM_REDIS_ULR": "x"}) == ["unknown setting PM_REDIS_ULR (did you mean PM_REDIS_URL?)"]
    monkeypatch.setenv("PM_RATE_LIMT_PER_S", "5")
    with pytest.raises(pydantic.ValidationError, match="PM_RATE_LIMT_PER_S"):
        Settings()


def test_known_names_are_the_settings_fields() -> None:
    # Derived from the fields, never a hand-kept list: every field is accepted under its PM_ name.
    assert known_names() == {f"PM_{name.upper()}" for name in Settings.model_fields}
    every_field = {name: "1" for name in known_names()}
    assert unknown_names(every_field) == []
    # pydantic-settings reads names case-insensitively, so the check does too.
    assert unknown_names({"pm_redis_url": "x"}) == []
    assert unknown_names({"pm_redis_ulr": "x"}) != []
    # Other prefixes are none of our business.
    assert unknown_names({"PMX_FOO": "1", "PROMETHEUS_MULTIPROC_DIR": "/tmp", "HTTP_PORT": "8080"}) == []


def test_every_pm_name_the_tests_and_ci_read_is_a_setting_or_an_allowed_test_name() -> None:
    used: set[str] = set()
    for path in [ROOT / "Makefile", ROOT / ".ci" / "run", *sorted((ROOT / "tests").rglob("*.py"))]:
        used |= set(re.findall(r"\b(PM_[A-Z][A-Z0-9_]*[A-Z0-9])\b", path.read_text()))
    # Names these tests make up on purpose to be refused:
    used -= {"PM_REDIS_ULR", "PM_RATE_LIMT_PER_S", "PM_RATE_LIMT", "PM_NOT_A_SETTING"}
    assert unknown_names(dict.fromkeys(used, "1")) == []
    assert not TEST_ONLY_NAMES & known_names()


def test_env_example_names_only_settings() -> None:
    names = [line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
             if line and not line.startswith("#")]
    assert unknown_names(dict.fromkeys(names, "1")) == []


# --------------------------------------------------------------------------- the admin token in production

def shipped_tokens() -> set[str]:
    """Every admin token value written in the repository, plus the default."""
    found = {str(Settings.model_fields["admin_token"].default)}
    for path in SHIPPED:
        if path.is_file():
            found |= set(TOKEN_VALUE.findall(path.read_text(errors="replace")))
    return found


def test_the_shipped_token_values_are_found() -> None:
    tokens = shipped_tokens()
    assert {"change-me-admin-token", "dev-admin-token"} <= tokens


@pytest.mark.parametrize("token", sorted(shipped_tokens()))
def test_production_refuses_every_shipped_token(token: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="PM_ADMIN_TOKEN"):
        Settings(environment="production", admin_token=token)


def test_production_refuses_a_token_shorter_than_32_characters() -> None:
    with pytest.raises(pydantic.ValidationError, match="32 characters"):
        Settings(environment="production", admin_token="x" * 31)
    assert Settings(environment="production", admin_token="x" * 32).admin_token == "x" * 32
    # Development tolerates the placeholder (and says so in serve's log).
    assert Settings(environment="development", admin_token="dev-admin-token").admin_token == "dev-admin-token"


def test_serve_in_production_with_the_env_example_token_does_not_start() -> None:
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line.startswith("PM_ADMIN_TOKEN="))
    result = run(["serve", "--port", str(free_port())],
                 clean_env(PM_ENVIRONMENT="production", **example, **NOT_SERVICES))
    assert result.returncode == 2, result.stderr
    assert "PM_ADMIN_TOKEN" in result.stderr and "production" in result.stderr


# --------------------------------------------------------------------------- what gets logged

def test_the_effective_configuration_hides_secrets() -> None:
    token = secrets.token_urlsafe(32)
    settings = Settings(admin_token=token, database_url="postgresql+psycopg://app:pg-secret@db:5432/pm",
                        redis_url="redis://:redis-secret@cache:6379/0")
    view = redacted(settings)
    text = repr(view)
    assert token not in text and "pg-secret" not in text and "redis-secret" not in text
    assert view["admin_token"] == "***"
    assert view["database_url"] == "postgresql+psycopg://app:***@db:5432/pm"
    assert view["redis_url"] == "redis://:***@cache:6379/0"
    assert set(view) == set(Settings.model_fields)


@pytest.mark.parametrize(("name", "value"), [("PM_LOG_FORMAT", "xml"), ("PM_LOG_LEVEL", "loud")])
def test_log_settings_are_validated(name: str, value: str) -> None:
    result = run(["serve", "--port", str(free_port())], clean_env(**{name: value}, **NOT_SERVICES))
    assert result.returncode == 2
    assert name in result.stderr


@pytest.mark.parametrize("prefix", ["pm", "{pm}", "prod{pm}", "{pm}-eu", "a.b_c-1"])
def test_a_key_prefix_may_carry_one_hash_tag(prefix: str) -> None:
    assert Settings(key_prefix=prefix).key_prefix == prefix


@pytest.mark.parametrize("prefix", ["", "{}", "{a}{b}", "a b", "pm:x", "{pm", "x" * 65])
def test_a_key_prefix_is_refused_unless_a_name_with_at_most_one_hash_tag(prefix: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="key_prefix"):
        Settings(key_prefix=prefix)


def test_on_a_cluster_the_key_prefix_must_carry_a_hash_tag() -> None:
    """Every script touches several keys; Redis Cluster runs it only if they share a slot, which one hash tag
    in the prefix guarantees (one shard). The message says how to write it."""
    with pytest.raises(pydantic.ValidationError, match=r"PM_KEY_PREFIX must carry a hash tag .*\{pm\}"):
        Settings(redis_url="redis+cluster://127.0.0.1:7000,127.0.0.1:7001", key_prefix="pm")
    tagged = Settings(redis_url="redis+cluster://127.0.0.1:7000,127.0.0.1:7001", key_prefix="{pm}")
    assert tagged.key_prefix == "{pm}"
