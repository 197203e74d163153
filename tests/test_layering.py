"""The floors of the house import downwards only (README "How it fits together")."""
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
