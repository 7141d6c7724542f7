"""The package layout is the architecture: foundations at the root, subpackages in data-flow order, no import
back.

Checked statically over every module's import statements (function-level imports included): a foundation
module (``catimg/*.py``) imports no subpackage; a subpackage imports only foundations and the subpackages
before it in :data:`FLOW`; nothing but the command line imports ``catimg.cli`` and nothing in the core imports
``catimg.benchmarks``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import catimg

PACKAGE = Path(catimg.__file__).parent
#: Data-flow order: each subpackage may import the ones before it, never the ones after it.
FLOW = ("costs", "routing", "generation", "calibration", "training")
OUTER = ("cli", "benchmarks")


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, name) for line, name in found if name == "catimg" or name.startswith("catimg.")]


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FLOW + OUTER else "root"


def test_every_import_points_down_the_data_flow() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        here = rel.parts[0] if len(rel.parts) > 1 else "root"
        if here in OUTER or rel.name == "__main__.py":
            continue
        for line, module in _imports(path):
            there = _part(module)
            if there in (here, "root"):
                continue
            if here == "root" or there in OUTER or FLOW.index(there) > FLOW.index(here):
                wrong.append(f"catimg/{rel}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_every_subpackage_says_what_it_holds() -> None:
    for name in FLOW + OUTER:
        init = PACKAGE / name / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) >= 3, f"catimg/{name}/__init__.py needs a contract docstring"
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} == set(FLOW + OUTER)
