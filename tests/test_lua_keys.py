"""Every key a script touches arrives in KEYS, spelled by engine/keys.py alone; every script opens
with its ``#!lua`` flags line, and that line is the first of what Redis receives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.scripts import LIB, sources, with_library
from lua import SCRIPT_DIR

SCRIPTS = sorted(p for p in SCRIPT_DIR.glob("*.lua") if p.stem != LIB)
ALL_LUA = sorted(SCRIPT_DIR.glob("*.lua"))
#: Flags a script may carry: writing is the default, and no script may cross slots or be read-only
#: while it writes (see lua/lib.lua).
ALLOWED_FLAGS = {"allow-oom"}

#: Fragments of key names (engine/keys.py) that must not appear in a Lua string literal.
KEY_FRAGMENTS = (":u:", ":idem:", ":pos", "{m:", ":rl:", ":usernames", ":apikeys", ":user_ids", ":markets",
                 ":archived", ":evicted", ":events", ":trade_seq", ":dirty", ":totals", ":persister:")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def code_of(source: str) -> str:
    """The Lua without its comments (``--`` to the end of the line; no script uses block comments)."""
    assert "--[[" not in source
    lines = []
    for line in source.splitlines():
        # A '--' inside a string literal is not a comment: blank the strings before looking for it.
        blanked = _STRING.sub(lambda m: "_" * len(m.group()), line)
        cut = blanked.find("--")
        lines.append(line if cut < 0 else line[:cut])
    return "\n".join(lines)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_every_script_opens_with_its_flags_line(path: Path) -> None:
    first = path.read_text().partition("\n")[0]
    assert first == "#!lua" or first.startswith("#!lua flags="), first
    flags = set(first.removeprefix("#!lua").removeprefix(" flags=").split(",")) - {""}
    assert flags <= ALLOWED_FLAGS, flags


def test_redis_receives_the_flags_line_first_then_the_library() -> None:
    lib = (SCRIPT_DIR / f"{LIB}.lua").read_text()
    assert not lib.startswith("#!")
    for path in SCRIPTS:
        shebang = path.read_text().partition("\n")[0]
        sent = sources()[path.stem]
        assert sent.partition("\n")[0] == shebang
        assert lib in sent


def test_a_script_without_its_flags_line_is_refused_at_load() -> None:
    with pytest.raises(RuntimeError, match="#!lua"):
        with_library("-- no flags\nreturn 1", "-- lib")


@pytest.mark.parametrize("path", ALL_LUA, ids=lambda p: p.stem)
def test_no_script_spells_a_key_name(path: Path) -> None:
    code = code_of(path.read_text())
    literals = _STRING.findall(code)
    spelled = [s for s in literals if any(fragment in s for fragment in KEY_FRAGMENTS)]
    assert not spelled, f"key names belong to engine/keys.py, passed in KEYS: {spelled}"
    assert not re.search(r"\bprefix\b", code), "a script builds a key from the prefix instead of taking it in KEYS"


def test_the_check_sees_a_key_built_in_a_script() -> None:
    built = "local k = prefix .. ':idem:' .. user .. ':' .. key -- a comment: ':u:'\n"
    code = code_of(built)
    assert "a comment" not in code
    assert any(":idem:" in s for s in _STRING.findall(code)) and re.search(r"\bprefix\b", code)
