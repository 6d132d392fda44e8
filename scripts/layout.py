"""The package -> role, files, lines table of docs/architecture.md.

    .venv/bin/python scripts/layout.py           # print the table with today's counts
    .venv/bin/python scripts/layout.py --write   # refresh the counts in docs/architecture.md

A unit is a top-level module of ``lagoon/`` or a package (a folder with ``__init__.py``); a
package's counts are its own modules, not its subpackages'. Roles are written by hand in the
document and kept; ``tests/test_architecture.py`` checks that the table names every unit (and no
other), not the counts, so adding code never breaks a test.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
START = "<!-- package-table:start -->"
END = "<!-- package-table:end -->"
HEADER = "| package | role | files | lines |\n|---|---|---|---|\n"


def units() -> dict[str, tuple[int, int]]:
    """``lagoon.x`` / ``lagoon.x.y`` -> (files, lines), in path order."""
    out: dict[str, tuple[int, int]] = {}
    lagoon = ROOT / "lagoon"
    for init in sorted(lagoon.rglob("__init__.py")):
        folder = init.parent
        files = sorted(folder.glob("*.py"))
        if folder == lagoon:
            files = [init]
        name = ".".join(folder.relative_to(ROOT).parts)
        out[name] = (len(files), sum(len(f.read_text().splitlines()) for f in files))
    for module in sorted(lagoon.glob("*.py")):
        if module.name != "__init__.py":
            out[f"lagoon.{module.stem}"] = (1, len(module.read_text().splitlines()))
    return dict(sorted(out.items()))


def roles(text: str) -> dict[str, str]:
    """The roles written in the document's table."""
    start, end = text.index(START), text.index(END)
    out = {}
    for row in text[start:end].splitlines()[3:]:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) == 4:
            out[cells[0].strip("`")] = cells[1]
    return out


def table(text: str) -> str:
    known = roles(text)
    rows = [
        f"| `{name}` | {known.get(name, 'TODO')} | {files} | {lines:,} |"
        for name, (files, lines) in units().items()
    ]
    return HEADER + "\n".join(rows) + "\n"


def main() -> None:
    text = DOC.read_text()
    body = table(text)
    if "--write" in sys.argv[1:]:
        DOC.write_text(
            re.sub(
                re.escape(START) + r".*?" + re.escape(END),
                lambda _: f"{START}\n{body}{END}",
                text,
                flags=re.S,
            )
        )
    else:
        print(body, end="")


if __name__ == "__main__":
    main()
