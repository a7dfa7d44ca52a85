"""The repository as a reader and a packager find it: licence, links, documented variables, pinned tools."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_license_file_is_the_one_pyproject_declares() -> None:
    declared = PYPROJECT["project"]["license"]["text"]
    assert declared == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text


@pytest.mark.parametrize("document", MARKDOWN, ids=lambda p: p.name)
def test_every_relative_link_points_inside_the_repository(document: Path) -> None:
    text = document.read_text()
    targets = re.findall(r"\]\(([^)#\s]+)", text) + re.findall(r"`(\.\./[^`\s]+)`", text)
    for target in targets:
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        resolved = (document.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{document.name} links outside the repository: {target}"
        assert resolved.exists(), f"{document.name} links to a missing file: {target}"


def test_the_api_reference_is_published_in_the_repository() -> None:
    api = (ROOT / "docs" / "API.md").read_text()
    assert "## HTTP API" in api and "## Invariants" in api
    assert "(docs/API.md)" in (ROOT / "README.md").read_text()


def test_every_variable_the_tests_read_is_documented() -> None:
    read = set()
    for path in [*(ROOT / "tests").glob("*.py"), ROOT / "Makefile"]:
        read |= set(re.findall(r"\b(PM_(?:TEST_[A-Z_]+|REQUIRE_REAL_SERVICES))\b", path.read_text()))
    assert {"PM_TEST_REDIS_URL", "PM_TEST_PG_URL", "PM_REQUIRE_REAL_SERVICES"} <= read
    readme = (ROOT / "README.md").read_text()
    assert not {name for name in read if f"`{name}`" not in readme}


def test_dev_tools_are_pinned_to_a_tested_range() -> None:
    """A new ruff or mypy release must not turn CI red by itself: every dev tool has an upper bound."""
    for requirement in PYPROJECT["project"]["optional-dependencies"]["dev"]:
        assert "<" in requirement, f"unbounded dev requirement: {requirement}"
    pins = {re.split(r"[\[<>=]", r)[0]: r for r in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    assert re.search(r"<0\.\d+$", pins["ruff"]) and re.search(r"<\d+\.\d+$", pins["mypy"])
