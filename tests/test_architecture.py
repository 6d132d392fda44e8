"""The layer contract and its documentation agree.

``[tool.importlinter]`` in pyproject.toml is the executable contract (``scripts/check`` runs it);
``docs/architecture.md`` shows it as a table. These tests fail when the two disagree, when a
package of ``lagoon/`` is missing from the table, or when the contract stops catching an upward
import.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
TABLE_START = "<!-- layer-table:start -->"
TABLE_END = "<!-- layer-table:end -->"


def contract(contract_id: str) -> dict[str, Any]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (found,) = [c for c in cfg["contracts"] if c["id"] == contract_id]
    return dict(found)


def contract_layers() -> list[set[str]]:
    """The layers, top first, each as its set of module names (optional markers dropped)."""
    out = []
    for layer in contract("layers")["layers"]:
        names = {n.strip().strip("()") for n in re.split(r"[|:]", layer)}
        out.append(names)
    return out


def doc_layers() -> list[set[str]]:
    text = DOC.read_text()
    start, end = text.index(TABLE_START), text.index(TABLE_END)
    rows = [line for line in text[start:end].splitlines() if line.startswith("|")][2:]
    layers = []
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        layers.append(set(re.findall(r"`lagoon\.([a-z_]+)`", cells[1])))
    return layers


def test_doc_table_matches_the_contract() -> None:
    assert doc_layers() == contract_layers()


def test_every_package_is_in_exactly_one_layer() -> None:
    children = {
        p.stem if p.is_file() else p.name
        for p in (ROOT / "lagoon").iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()
    }
    listed = [name for layer in contract_layers() for name in layer]
    assert len(listed) == len(set(listed))
    assert children <= set(listed), f"not in any layer: {sorted(children - set(listed))}"
    assert contract("layers").get("exhaustive") is True


def test_contract_is_checked_by_scripts_check() -> None:
    assert "lint-imports" in (ROOT / "scripts" / "check").read_text()


def test_exceptions_are_explicit() -> None:
    """Known violations name their importing module; none may exempt a whole package."""
    for cid in ("layers", "acyclic"):
        for rule in contract(cid).get("ignore_imports", []):
            importer, _ = (s.strip() for s in rule.split("->"))
            assert "*" not in importer, rule


def lint_imports_with(tmp_path: Path, probe_module: str, source: str) -> subprocess.CompletedProcess[str]:
    shutil.copytree(ROOT / "lagoon", tmp_path / "lagoon", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "lagoon" / Path(*probe_module.split("."))).with_suffix(".py").write_text(source)
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", "--no-logo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_contract_passes_on_the_tree(tmp_path: Path) -> None:
    run = lint_imports_with(tmp_path, "format._probe", '"""Nothing imported."""\n')
    assert run.returncode == 0, run.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    run = lint_imports_with(tmp_path, "format._probe", "import lagoon.engine.database\n")
    assert run.returncode != 0
    assert "lagoon.format is not allowed to import lagoon.engine" in run.stdout


def test_io_in_a_pure_layer_breaks_the_contract(tmp_path: Path) -> None:
    run = lint_imports_with(tmp_path, "index._probe", "import asyncio\n")
    assert run.returncode != 0
    assert "lagoon.index is not allowed to import asyncio" in run.stdout


def test_a_cycle_breaks_the_contract(tmp_path: Path) -> None:
    run = lint_imports_with(tmp_path, "storage._probe", "import lagoon.storage.factory\n")
    assert run.returncode == 0, run.stdout  # a plain downward import is fine
    (tmp_path / "lagoon" / "storage" / "base.py").write_text(
        (ROOT / "lagoon" / "storage" / "base.py").read_text() + "\nfrom lagoon.storage import _probe\n"
    )
    run = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", "--no-logo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "No cycles are allowed in lagoon.storage" in run.stdout


SHELLS = ("server", "cli", "worker", "embedded.py")


def shell_modules() -> list[Path]:
    out: list[Path] = []
    for name in SHELLS:
        p = ROOT / "lagoon" / name
        out.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return out


def test_shells_never_handle_storage_errors() -> None:
    """Storage errors are translated once, at the engine boundary (lagoon/engine/errors.py)."""
    import ast

    from lagoon.storage import base

    error_names = {
        n for n, v in vars(base).items() if isinstance(v, type) and issubclass(v, base.StorageError)
    }
    offenders = []
    for path in shell_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lagoon.storage"):
                offenders += [
                    f"{path.relative_to(ROOT)}: {a.name}" for a in node.names if a.name in error_names
                ]
    assert not offenders


def test_design_citations_name_existing_sections() -> None:
    """Code cites docs/design.md by section; every cited section exists (and no other design doc)."""
    sections = set(re.findall(r"^## (§\d+)", (ROOT / "docs" / "design.md").read_text(), re.M))
    cited: set[str] = set()
    for path in (ROOT / "lagoon").rglob("*.py"):
        text = path.read_text()
        assert "DESIGN" not in text, f"{path}: cite docs/design.md, not an outside document"
        cited.update(m.split(".")[0] for m in re.findall(r"docs/design\.md (§[\d.]+)", text))
    assert cited, "no module cites docs/design.md"
    assert cited <= sections, f"cited but missing: {sorted(cited - sections)}"


def test_package_table_names_every_package() -> None:
    """docs/architecture.md's package table (scripts/layout.py) lists each package and top-level
    module of lagoon/ once, with a role; the counts are refreshed by the script, not checked."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("layout", ROOT / "scripts" / "layout.py")
    assert spec is not None and spec.loader is not None
    layout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layout)
    documented = layout.roles(DOC.read_text())
    assert set(documented) == set(layout.units()), "run .venv/bin/python scripts/layout.py --write"
    assert all(role and role != "TODO" for role in documented.values())
