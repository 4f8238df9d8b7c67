"""The suite's own layout: shared helpers live in tests/support/, so no module of the suite
imports a test module (a file named test_*.py), whatever the form of the import."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _module_parts(root: Path, path: Path) -> list[str]:
    """`tests/support/scheduled.py` -> ["tests", "support", "scheduled"]."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imported(root: Path, path: Path, node: ast.AST) -> Iterator[str]:
    """Every module an import statement may load, relative imports resolved."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base: list[str] = []
        if node.level:
            package = _module_parts(root, path)
            if path.name != "__init__.py":
                package = package[:-1]
            base = package[: len(package) - (node.level - 1)]
        source = [*base, *(node.module.split(".") if node.module else [])]
        yield ".".join(source)
        # `from tests import test_x` names a module, not an attribute.
        yield from (".".join([*source, alias.name]) for alias in node.names)


def _is_test_module(root: Path, dotted: str) -> bool:
    parts = dotted.split(".")
    return parts[0] == root.name and any(part.startswith("test_") for part in parts[1:])


def imports_of_test_modules(root: Path) -> list[str]:
    """`file:line imports module` for each import of a test module by any module under `root`,
    the suite's folder (itself the `tests` package)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(root.parent).as_posix()
        for node in ast.walk(tree):
            hits = [d for d in _imported(root, path, node) if _is_test_module(root, d)]
            # `from tests.test_x import y`: the module is tests.test_x, not tests.test_x.y.
            named = [h for h in hits if not any(h.startswith(f"{o}.") for o in hits)]
            found += [f"{where}:{node.lineno} imports {dotted}" for dotted in named]
    return found


def _suite(root: Path, files: dict[str, str]) -> Path:
    """A `tests` package under `root` holding `files` (path -> source)."""
    suite = root / "tests"
    for name, source in {"__init__.py": "", "support/__init__.py": "", **files}.items():
        (suite / name).parent.mkdir(parents=True, exist_ok=True)
        (suite / name).write_text(source, encoding="utf-8")
    return suite


def test_no_module_of_the_suite_imports_a_test_module() -> None:
    # Helpers shared between test modules live in tests/support/: a test module that imports
    # another loads (and couples to) that module's tests, fixtures and private helpers.
    assert imports_of_test_modules(TESTS) == []


def test_no_support_module_imports_a_test_module() -> None:
    # tests/support/ sits below the test modules: it never reaches up into one of them.
    assert [line for line in imports_of_test_modules(TESTS) if "/support/" in line] == []
    assert list((TESTS / "support").glob("*.py")), "the check would see no support module"


@pytest.mark.parametrize(
    ("statement", "module"),
    [
        ("from tests.test_a import helper", "tests.test_a"),
        ("import tests.test_a", "tests.test_a"),
        ("import tests.test_a as a", "tests.test_a"),
        ("from tests import test_a", "tests.test_a"),
        ("from tests import support, test_a", "tests.test_a"),
        ("from .test_a import helper", "tests.test_a"),
        ("from . import test_a", "tests.test_a"),
        ("from tests.hostile.test_corpus import CASES", "tests.hostile.test_corpus"),
        pytest.param(
            "def later():\n    from tests.test_a import helper", "tests.test_a", id="in-a-function"
        ),
    ],
)
def test_every_form_of_importing_a_test_module_is_found_with_its_file_and_line(
    tmp_path: Path, statement: str, module: str
) -> None:
    # Absolute, aliased, from the package, relative, nested in a function: each one is named.
    suite = _suite(tmp_path, {"test_a.py": "", "test_b.py": f"import os\n\n{statement}\n"})
    line = statement.count("\n") + 3
    assert imports_of_test_modules(suite) == [f"tests/test_b.py:{line} imports {module}"]


@pytest.mark.parametrize(
    "statement", ["from ..test_a import helper", "from .. import test_a", "import tests.test_a"]
)
def test_a_support_module_importing_a_test_module_is_found(tmp_path: Path, statement: str) -> None:
    # A helper that reaches back into a test module is as wrong as a test module doing it.
    suite = _suite(tmp_path, {"test_a.py": "", "support/rows.py": f"{statement}\n"})
    assert imports_of_test_modules(suite) == ["tests/support/rows.py:1 imports tests.test_a"]


def test_imports_of_support_fakes_and_libraries_pass(tmp_path: Path) -> None:
    # Only test modules are off limits: support, fakes, the library and third-party modules
    # (even one whose name starts with test_) are what test modules are meant to import.
    source = (
        "import pytest\n"
        "import test_outside_the_suite\n"
        "from digest.tests import test_like\n"
        "from tests import support\n"
        "from tests.fakes.fake_sendgrid import FakeSendGrid\n"
        "from tests.support.rows import make_row\n"
        "from .support import rows\n"
    )
    suite = _suite(tmp_path, {"test_b.py": source, "support/rows.py": "from . import other\n"})
    assert imports_of_test_modules(suite) == []
