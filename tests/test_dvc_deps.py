"""dvc.yaml lists, for every stage, exactly the project code the stage runs.

DVC reruns a stage only when one of its listed deps changes, so a module the stage
imports but dvc.yaml omits leaves stale artifacts after `dvc repro`; a listed
module it does not import reruns it for nothing. The imports are derived here from
the source as it is now (``ast``, transitively, including relative imports and
imports inside functions), never from a hand-kept list.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The project file that defines module ``name`` (a .py or a package's __init__.py), else None."""
    path = root.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _package_of(file: Path, root: Path) -> list[str]:
    parts = list(file.relative_to(root).with_suffix("").parts)
    return parts if parts[-1] != "__init__" else parts[:-1]


def imported_modules(file: Path, root: Path = ROOT) -> set[str]:
    """Dotted names of every module ``file`` may import: top-level or inside functions, absolute or
    relative, ``from pkg import submodule`` and ``importlib.import_module("literal")``."""
    tree = ast.parse(file.read_text(), filename=str(file))
    this = _package_of(file, root)
    package = this if file.name == "__init__.py" else this[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module:
                names.add(module)
            names.update(f"{module}.{alias.name}" if module else alias.name for alias in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value)
    return names


def _has_code(file: Path) -> bool:
    """False for an empty or docstring-only __init__.py: importing it runs nothing."""
    body = ast.parse(file.read_text()).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return bool(body)


def project_files_run_by(module: str, root: Path = ROOT) -> set[str]:
    """Repository-relative paths of every project file that ``python -m <module>`` imports, transitively.

    Importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``; those count when they hold code.
    """
    start = module_file(module, root)
    assert start is not None, f"no project file for module {module!r}"
    seen: set[Path] = set()
    parts = _package_of(start, root)
    pending = [start] + [f for depth in range(1, len(parts)) if (f := module_file(".".join(parts[:depth]), root))]
    while pending:
        file = pending.pop()
        if file in seen:
            continue
        seen.add(file)
        for name in imported_modules(file, root):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # every enclosing package runs too
                found = module_file(".".join(parts[:depth]), root)
                if found is not None and found not in seen:
                    pending.append(found)
    return {str(f.relative_to(root)) for f in seen if f.name != "__init__.py" or _has_code(f)}


def dvc_stages(root: Path = ROOT) -> dict[str, dict]:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def stage_module(stage: dict) -> str:
    command = stage["cmd"].split()
    assert command[:2] == ["python", "-m"], f"expected 'python -m <module>', got {stage['cmd']!r}"
    return command[2]


def listed_code(stage: dict) -> set[str]:
    deps = [next(iter(d)) if isinstance(d, dict) else d for d in stage.get("deps", [])]
    return {d for d in deps if d.endswith(".py")}


STAGES = dvc_stages()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_dvc_yaml_lists_every_project_module_the_stage_imports(name: str) -> None:
    """A module the stage imports but dvc.yaml does not list would leave stale outputs after dvc repro."""
    needed = project_files_run_by(stage_module(STAGES[name]))
    missing = sorted(needed - listed_code(STAGES[name]))
    assert not missing, f"dvc.yaml stage {name!r} imports but does not list: {', '.join(missing)}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_dvc_yaml_lists_no_code_the_stage_does_not_run(name: str) -> None:
    """A wrong entry (a missing file, or a module the stage never imports) reruns the stage for nothing."""
    listed = listed_code(STAGES[name])
    absent = sorted(path for path in listed if not (ROOT / path).is_file())
    assert not absent, f"dvc.yaml stage {name!r} lists files that do not exist: {', '.join(absent)}"
    unused = sorted(listed - project_files_run_by(stage_module(STAGES[name])))
    assert not unused, f"dvc.yaml stage {name!r} lists code it never imports: {', '.join(unused)}"


def test_import_walk_follows_relative_lazy_and_package_imports(tmp_path: Path) -> None:
    """The walker itself: a miss here would let dvc.yaml drift without these tests noticing."""
    files = {
        "stages/__init__.py": "",
        "stages/run.py": "import os\nfrom pkg.a import f\n\ndef main():\n    from pkg import lazy\n",
        "pkg/__init__.py": '"""Docstring only."""\n',
        "pkg/a.py": "from .b import g\nfrom . import c\n",
        "pkg/b.py": "import importlib\n\ndef g():\n    return importlib.import_module('pkg.d')\n",
        "pkg/c.py": "from pkg.sub.e import h\n",
        "pkg/d.py": "",
        "pkg/lazy.py": "",
        "pkg/unused.py": "",
        "pkg/sub/__init__.py": "CONSTANT = 1\n",
        "pkg/sub/e.py": "from ..d import *\n",
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    assert project_files_run_by("stages.run", tmp_path) == {
        "stages/run.py", "pkg/a.py", "pkg/b.py", "pkg/c.py", "pkg/d.py", "pkg/lazy.py",
        "pkg/sub/__init__.py", "pkg/sub/e.py",
    }
