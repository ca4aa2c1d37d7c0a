"""Every docstring example in ``cotlib`` runs: one test per module, found by walking the package,
so a new module's examples run without a line here."""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil

import pytest

import cotlib

#: Variables a library sets when it is first imported (torch), not an example.
IMPORT_SIDE_EFFECTS = {"TORCHINDUCTOR_CACHE_DIR"}
MODULES = sorted(m.name for m in pkgutil.walk_packages(cotlib.__path__, prefix="cotlib."))


def test_the_walk_finds_the_package():
    """The parametrisation below is only as good as the walk: it must see the modules."""
    assert {"cotlib.stages", "cotlib.models", "cotlib.train", "cotlib.infer"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name, tiny_cache, tmp_path, monkeypatch, capsys):
    """``name``'s examples pass (ELLIPSIS on, as in the docstrings); run folders go to a temporary
    place and tiny models to the session's cache, so no example writes into the clone."""
    monkeypatch.setenv("COTLIB_RUNS", str(tmp_path / "runs"))
    module = importlib.import_module(name)
    before = dict(os.environ)
    try:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True)
    finally:
        # an example that sets a variable (env.is_fast's once set COTLIB_FAST=0) must not leak
        # into the worker: every notebook kernel it starts later inherits its environment
        changed = sorted(k for k in {*os.environ, *before}
                         if os.environ.get(k) != before.get(k) and k not in IMPORT_SIDE_EFFECTS)
        for key in changed:
            if key in before:
                os.environ[key] = before[key]
            else:
                del os.environ[key]
    report = capsys.readouterr().out
    assert not changed, (
        f"{name}'s examples change os.environ ({changed}) and do not put it back: use "
        "unittest.mock.patch.dict(os.environ, ...) in the example")
    assert result.failed == 0, (
        f"{name}: {result.failed} of {result.attempted} examples failed\n{report}")


def test_most_modules_have_examples():
    """Examples are the modules' documentation: a module without any is the exception."""
    finder = doctest.DocTestFinder()
    without = [name for name in MODULES
               if not any(t.examples for t in finder.find(importlib.import_module(name)))]
    assert len(without) <= len(MODULES) // 4, f"modules without examples: {without}"


def test_every_subpackage_ships_in_the_wheel():
    """Modules split into packages (cotlib/checks, cotlib/teacher, ...) must be listed in
    pyproject's setuptools packages, or a wheel installs without them."""
    from pathlib import Path

    import tomllib

    root = Path(cotlib.__file__).resolve().parent
    listed = set(tomllib.loads((root.parent / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root.parent).parts) for p in root.rglob("__init__.py")
             if "__pycache__" not in p.parts}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
