"""Each package installs and imports with only its upstream stages: dependencies flow one way.

`tools/check_isolated_install.sh` does the real thing (fresh venvs, pip install); these tests check the same
property cheaply on every run: no file imports a downstream stage, every third-party import is declared in the
package's pyproject, and each package imports with the downstream packages made unimportable.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["contrastive_encoder", "flamingo_core", "fewshot_eval"]
# import name -> distribution name where they differ
DIST = {"PIL": "pillow", "yaml": "pyyaml", "faiss": "faiss-cpu", "av": "av", "sklearn": "scikit-learn",
        "open_clip": "open-clip-torch"}


def _imports(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / "packages" / package / "src" / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _declared(package: str) -> set[str]:
    meta = tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())["project"]
    reqs = list(meta.get("dependencies", []))
    for extra in meta.get("optional-dependencies", {}).values():
        reqs += extra
    names = set()
    for req in reqs:
        name = req.split(";")[0].strip()
        for sep in "<>=!~[ ":
            name = name.split(sep)[0]
        names.add(name.lower().replace("_", "-"))
    return names


@pytest.mark.parametrize("package", ORDER)
def test_no_import_of_a_downstream_stage(package):
    downstream = ORDER[ORDER.index(package) + 1 :]
    imports = _imports(package)
    bad = {d: sorted(imports[d]) for d in downstream if d in imports}
    assert not bad, f"{package} imports downstream stages: {bad}"


@pytest.mark.parametrize("package", ORDER)
def test_third_party_imports_are_declared(package):
    stdlib = set(sys.stdlib_module_names)
    declared = _declared(package)
    upstream = set(ORDER[: ORDER.index(package)])
    missing = {}
    for name, files in _imports(package).items():
        if name in stdlib or name == package or name in upstream or name == "__future__":
            continue
        dist = DIST.get(name, name).lower().replace("_", "-")
        if dist not in declared:
            missing[name] = sorted(files)
    for up in upstream:  # an upstream stage that is imported must be declared too
        if up in _imports(package) and up.replace("_", "-") not in declared:
            missing[up] = sorted(_imports(package)[up])
    assert not missing, f"{package} imports undeclared packages: {missing}"


@pytest.mark.parametrize("package", ORDER)
def test_imports_with_downstream_packages_absent(package):
    downstream = ORDER[ORDER.index(package) + 1 :]
    code = f"""
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {downstream!r}:
            raise ImportError('blocked downstream package ' + name)
sys.meta_path.insert(0, Block())
pkg = importlib.import_module({package!r})
for mod in pkgutil.walk_packages(pkg.__path__, {package!r} + '.'):
    if not mod.name.endswith('__main__'):
        importlib.import_module(mod.name)
print('ok')
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")
