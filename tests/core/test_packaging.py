"""The wheel that ``pip install .`` builds: every module, the playground's files, and no setuptools warning.

The build is pip's own isolated one, as ``pip install .`` runs it, with setuptools
from pip's configured index (a local mirror here, so it runs offline). The venv's
setuptools cannot stand in (``--no-build-isolation``): it has no ``bdist_wheel``.
It builds from a copy of the tree, so the shared checkout gets no ``build/``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ("relay/http/static/index.html", "relay/http/static/app.js")


def test_the_wheel_holds_every_module_and_the_playground(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "serve_app.py"):
        shutil.copy(ROOT / name, source / name)
    for package in ("relay", "actors"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", str(tmp_path / "dist")],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    log = built.stdout + built.stderr
    assert "is absent from the `packages` configuration" not in log, log
    (wheel,) = (tmp_path / "dist").glob("relay-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # the copy's modules: the checkout is shared, and a file may appear in it while this test runs
    modules = {path.relative_to(source).as_posix() for path in source.glob("relay/**/*.py")}
    modules |= {path.relative_to(source).as_posix() for path in source.glob("actors/**/*.py")}
    assert "relay/cli/serve.py" in modules and "relay/http/app.py" in modules
    assert modules - names == set()
    assert set(STATIC) <= names and "serve_app.py" in names
