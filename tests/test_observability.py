"""Logs and metrics of the running processes (``predmarket serve`` and ``predmarket persister``).

Logs: JSON by default (every line parses, no terminal escapes), plain when asked,
a level setting, one start-up line with the effective configuration and no
secret, and an idle persister that stays quiet. Metrics: Prometheus conventions
(counters end in ``_total``, durations in seconds, no pre-computed rates, no
"since start" gauges), and the persister's counters served by the persister.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest
from predmarket.engine.keys import Keys
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy.engine import make_url

from tests.support.api import Api, Stack, StackFactory
from tests.support.network import free_port
from tests.support.processes import Process
from tests.support.waiting import wait_for

PG_PASSWORD = "pg-" + secrets.token_hex(8)
#: Families the API may export about the persister: the group's lag, read from the stream.
API_PERSISTER_GAUGES = {"predmarket_persister_lag_entries", "predmarket_persister_oldest_age_seconds"}
#: The persister's own counters, which only the persister itself serves.
PERSISTER_COUNTERS = {"entries", "rows", "trades", "dead_letters", "batches", "rounds", "market_writes",
                      "users_evicted", "markets_archived", "eviction_marks_forgotten"}
#: What the persister used to relay through its Redis hash (counters and rates): gone from there.
RELAYED = {"entries", "trades", "dead_letters", "market_writes", "events_per_s", "rows_per_s",
           "users_evicted", "markets_archived", "hot_users", "hot_markets"}


# --------------------------------------------------------------------------- fixtures and helpers

class Observed:
    """One API replica and one persister with its metrics endpoint; their logs as written."""

    def __init__(self, stack: Stack, metrics_port: int) -> None:
        self.stack = stack
        self.api = Api(stack)
        self.persister_metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    @property
    def serve(self) -> Process:
        return self.stack.servers[0]

    @property
    def persister(self) -> Process:
        return self.stack.persisters[0]


@pytest.fixture(scope="module")
def observed(stacks: StackFactory) -> Iterator[Observed]:
    database_url = make_url(stacks.database()).set(password=PG_PASSWORD).render_as_string(hide_password=False)
    port = free_port()
    stack = stacks.start("observed", replicas=1, database_url=database_url,
                         PM_PERSISTER_METRICS_PORT=str(port))
    observed = Observed(stack, port)
    try:
        yield observed
    finally:
        observed.api.close()


def lines(process: Process) -> list[str]:
    return [line for line in process.log_path.read_text(errors="replace").splitlines() if line.strip()]


def json_lines(process: Process) -> list[dict[str, Any]]:
    """Every line of the log as JSON (fails naming the first line that is not)."""
    entries = []
    for line in lines(process):
        try:
            entries.append(json.loads(line))
        except ValueError:
            pytest.fail(f"{process.name} logged a line that is not JSON: {line!r}")
    return entries


def start_lines(entries: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("msg") == f"{what} starting"]


def persister_start_lines(process: Process) -> list[dict[str, Any]]:
    return start_lines(json_lines(process), "predmarket persister")


def scrape(url: str) -> dict[str, Any]:
    """The exposition at ``url``, parsed by prometheus_client's own parser: family name -> family."""
    text = httpx.get(url, timeout=5).text
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict[str, Any], name: str) -> float:
    family = families[name.removesuffix("_total")]
    samples: list[Sample] = [s for s in family.samples if s.name == name]
    assert len(samples) == 1, samples
    return float(samples[0].value)


def persister_metrics(observed: Observed) -> dict[str, Any] | None:
    try:
        return scrape(observed.persister_metrics_url)
    except httpx.TransportError:
        return None


def assert_prometheus_conventions(families: dict[str, Any]) -> None:
    ours = {name: f for name, f in families.items() if name.startswith("predmarket_")}
    assert ours
    for name, family in ours.items():
        sample_names = {s.name for s in family.samples}
        assert "_per_s" not in name and not any("_per_s" in s for s in sample_names), name
        assert not name.endswith(("_ms", "_milliseconds")), f"{name}: durations are in seconds"
        if family.type == "counter":
            assert all(s.endswith(("_total", "_created")) for s in sample_names), (name, sample_names)
        if family.type in ("histogram", "summary"):
            assert name.endswith("_seconds"), f"{name}: durations are in seconds"
        if family.type == "gauge":
            # A count since the process started is a counter, never a gauge.
            assert not name.endswith(("_evicted", "_archived", "_total", "_entries_written")), name


# --------------------------------------------------------------------------- logs

def test_serve_logs_json_lines_without_terminal_escapes(observed: Observed) -> None:
    observed.api.request("GET", "/healthz")
    observed.api.request("GET", "/v1/me")  # 401: logged as an error response, counted
    raw = observed.serve.log_path.read_text(errors="replace")
    assert "\x1b" not in raw
    entries = json_lines(observed.serve)
    assert any(e["logger"].startswith("uvicorn") for e in entries)  # uvicorn's own lines go through us too
    for entry in entries:
        assert "color_message" not in entry
        assert "\x1b" not in json.dumps(entry, ensure_ascii=False), entry
        assert {"ts", "level", "logger", "msg"} <= set(entry)


def test_serve_logs_one_start_line_with_the_configuration_and_no_secret(observed: Observed) -> None:
    entries = json_lines(observed.serve)
    (start,) = start_lines(entries, "predmarket serve")
    config = start["config"]
    assert config["key_prefix"] == observed.stack.prefix
    assert config["admin_token"] == "***"
    assert config["database_url"].startswith("postgresql+psycopg://postgres:***@")
    assert config["log_format"] == "json" and config["log_level"] == "info"
    raw = observed.serve.log_path.read_text(errors="replace")
    assert observed.stack.admin_token not in raw
    assert PG_PASSWORD not in raw


def test_persister_logs_json_and_one_start_line_without_secrets(observed: Observed) -> None:
    wait_for(lambda: start_lines(json_lines(observed.persister), "predmarket persister"), 15, "the start line")
    entries = json_lines(observed.persister)
    (start,) = start_lines(entries, "predmarket persister")
    assert start["config"]["admin_token"] == "***"
    assert start["config"]["persister_metrics_port"] == start["metrics_port"]
    raw = observed.persister.log_path.read_text(errors="replace")
    assert "\x1b" not in raw
    assert observed.stack.admin_token not in raw and PG_PASSWORD not in raw


def test_an_idle_persister_logs_nothing_periodic(observed: Observed) -> None:
    observed.api.create_user()
    observed.stack.wait_persisted()
    metrics = wait_for(lambda: persister_metrics(observed), 15, "the persister's metrics endpoint")
    written = value(metrics, "predmarket_persister_entries_total")

    def reported_everything() -> bool:
        # Its work is logged once, in its next report; wait for that report before watching.
        reports = [e for e in json_lines(observed.persister) if "written" in e]
        reported: int = sum(e["written"] for e in reports)
        return reported >= written

    wait_for(reported_everything, 15, "the report of the work done")
    before = lines(observed.persister)
    rounds = value(wait_for(lambda: persister_metrics(observed), 5, "metrics"), "predmarket_persister_rounds_total")

    def idle_rounds_done() -> bool:
        # 14 idle rounds block 0.5 s each on the stream: longer than the 5 s between lag reports.
        now = persister_metrics(observed)
        return now is not None and value(now, "predmarket_persister_rounds_total") >= rounds + 14

    wait_for(idle_rounds_done, 30, "14 idle rounds of the persister", interval_s=0.2)
    assert value(persister_metrics(observed) or {}, "predmarket_persister_entries_total") == written
    assert lines(observed.persister) == before


@pytest.mark.parametrize("command", ["serve", "persister"])
def test_plain_format_when_asked(stacks: StackFactory, command: str) -> None:
    stack = stacks.start(f"plain-{command}", replicas=1, persister=command == "persister", PM_LOG_FORMAT="plain")
    process = stack.persisters[0] if command == "persister" else stack.servers[0]
    wait_for(lambda: any(f"predmarket {command} starting" in line for line in lines(process)), 15, "start line")
    text = process.log_path.read_text(errors="replace")
    assert "\x1b" not in text
    for line in lines(process):
        if line.startswith(" ") or line.startswith("Traceback"):
            continue
        with pytest.raises(ValueError):
            json.loads(line)
    (start,) = [line for line in lines(process) if f"predmarket {command} starting" in line]
    assert " INFO " in start and '"admin_token":"***"' in start
    assert stack.admin_token not in text


def test_the_level_setting_hides_lower_levels(stacks: StackFactory) -> None:
    stack = stacks.start("quiet", replicas=1, persister=True, PM_LOG_LEVEL="WARNING")
    api = Api(stack)
    try:
        api.create_user()
        stack.wait_persisted()
        api.request("GET", "/v1/me")
    finally:
        api.close()
    for process in (stack.servers[0], stack.persisters[0]):
        entries = json_lines(process)
        assert not [e for e in entries if e["level"] in ("debug", "info")], process.name
        assert not start_lines(entries, f"predmarket {'serve' if process in stack.servers else 'persister'}")


# --------------------------------------------------------------------------- metrics

def test_api_metrics_follow_prometheus_conventions(observed: Observed) -> None:
    observed.api.request("GET", "/v1/me")  # an error response and a request duration to export
    wait_for(lambda: observed.stack.redis().hget(Keys(observed.stack.prefix).persister_stats, "lag_entries")
             is not None, 15, "the persister's first lag report")
    families = scrape(f"{observed.stack.url}/metrics")
    assert_prometheus_conventions(families)
    assert families["predmarket_request_seconds"].type == "histogram"
    errors = [s for s in families["predmarket_errors"].samples if s.name == "predmarket_errors_total"]
    assert any(s.labels.get("code") == "UNAUTHENTICATED" and s.value >= 1 for s in errors)
    persister_families = {name for name in families if name.startswith("predmarket_persister_")}
    assert persister_families <= API_PERSISTER_GAUGES, persister_families - API_PERSISTER_GAUGES


def test_the_persister_serves_its_own_counters(observed: Observed) -> None:
    observed.api.create_user()
    observed.stack.wait_persisted()
    families = wait_for(lambda: persister_metrics(observed), 15, "the persister's metrics endpoint")
    assert_prometheus_conventions(families)
    for name in PERSISTER_COUNTERS:
        assert families[f"predmarket_persister_{name}"].type == "counter", name
    assert value(families, "predmarket_persister_entries_total") >= 1
    assert value(families, "predmarket_persister_batches_total") >= 1
    assert families["predmarket_persister_hot_users"].type == "gauge"
    # Not relayed through Redis: the API does not export them, the persister's hash does not hold them.
    api_families = scrape(f"{observed.stack.url}/metrics")
    assert not {f"predmarket_persister_{name}" for name in PERSISTER_COUNTERS} & set(api_families)
    with observed.stack.redis() as client:
        relayed = set(client.hkeys(Keys(observed.stack.prefix).persister_stats))
    assert not relayed & RELAYED, relayed & RELAYED


def test_several_persisters_can_share_a_host_without_a_metrics_port(stacks: StackFactory) -> None:
    stack = stacks.start("two-persisters", replicas=1)
    second = stack.start_persister()
    api = Api(stack)
    try:
        api.create_user()
        stack.wait_persisted()
    finally:
        api.close()
    for process in stack.persisters:
        wait_for(partial(persister_start_lines, process), 15, "the start line")
        (start,) = start_lines(json_lines(process), "predmarket persister")
        assert start["metrics_port"] is None
    assert second.alive() and stack.persisters[0].alive()
