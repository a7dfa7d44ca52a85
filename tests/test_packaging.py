"""The wheel's layout: one ``predmarket`` namespace mapped onto the top-level folders, the bench left out.

The image test (tests/test_deploy.py) builds the wheel and checks what it installs; these check the
declarations it is built from, without building.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
PRODUCT_FOLDERS: dict[str, str] = {"predmarket": "predmarket"} | {
    name: folder for name, folder in SETUPTOOLS["package-dir"].items() if name != "predmarket"}


def _folder_of(package: str) -> Path:
    """Where a dotted package name lives in the checkout, through the package-dir mapping."""
    best = max((name for name in PRODUCT_FOLDERS if package == name or package.startswith(name + ".")), key=len)
    rest = package[len(best):].lstrip(".")
    return ROOT / PRODUCT_FOLDERS[best] / rest.replace(".", "/")


def test_every_package_folder_of_the_product_is_declared_and_nothing_else() -> None:
    declared = set(SETUPTOOLS["packages"])
    on_disk = set()
    for name, folder in PRODUCT_FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            on_disk.add(".".join([name, *relative.parts]))
    # A folder of predmarket/ that is mapped elsewhere (none today) would count twice; the bench is not one.
    assert declared == on_disk
    assert all(_folder_of(p).joinpath("__init__.py").is_file() for p in declared)
    assert all(name.startswith("predmarket") for name in declared), "one top-level namespace"


def test_the_product_never_imports_the_bench_or_an_old_top_level_name() -> None:
    old_names = {"engine", "api", "persister", "record", "lua", "bench"}
    offenders = []
    for folder in set(PRODUCT_FOLDERS.values()):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in old_names]
    # The one sanctioned exception: `predmarket bench` imports it lazily from a checkout.
    assert sorted(offenders) == [f"predmarket/commands/bench.py: {n}" for n in (
        "bench.against", "bench.invariants", "bench.options", "bench.persister_runs", "bench.report", "bench.runner")]
