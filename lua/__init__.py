"""The Lua scripts, one file per operation; shipped as package data of the wheel."""

from pathlib import Path

SCRIPT_DIR = Path(__file__).parent
