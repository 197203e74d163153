"""The floors of the house import downwards only (docs/architecture.md)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agents", "commands", "deploy", "engine", "graphs", "datasets", "utils")
# package -> packages it must never import
FORBIDDEN = {
    "utils": {"agents", "commands", "deploy", "engine", "graphs", "datasets"},
    "datasets": {"agents", "commands", "deploy", "engine", "graphs"},
    "graphs": {"agents", "commands", "deploy", "engine", "datasets"},
    "engine": {"agents", "commands", "deploy", "graphs", "datasets"},
    "deploy": {"agents", "commands", "engine", "datasets"},
    "commands": {"agents"},
}


def imported_packages(path: Path) -> set:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(PACKAGES)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} is missing"
    for path in files:
        bad = imported_packages(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


UTILS_BUDGET = 900      # lines: utils/ holds small cross-cutting helpers only (config mechanics, errors, ...)
FILE_BUDGET = 450       # a module a newcomer reads in one sitting
# the package modules allowed above FILE_BUDGET, each with the reason
LONG_FILES = {"graphs/models/rexnet.py": "two official architectures (ReXNet v1 and lite, the official code's two "
                                         "files) with their variant table, model code only"}


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_utils_stays_small():
    sizes = {p.name: _lines(p) for p in sorted((ROOT / "utils").glob("*.py"))}
    assert sum(sizes.values()) < UTILS_BUDGET, f"utils/ has {sum(sizes.values())} lines ({sizes}); domain code " \
                                               f"belongs in its package"


def test_package_modules_stay_readable():
    long = {str(p.relative_to(ROOT)): n for package in PACKAGES for p in (ROOT / package).rglob("*.py")
            if (n := _lines(p)) > FILE_BUDGET}
    assert set(long) == set(LONG_FILES), f"modules above {FILE_BUDGET} lines: {long}; split them, or list one " \
                                         f"with its reason in LONG_FILES (and drop an entry that got shorter)"
