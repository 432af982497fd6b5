"""The layers run one way (docs/architecture.md): each module imports only from layers below its own,
no module imports a private name of another, and inference (``shortvid.infer``) imports without the
training code."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "shortvid"

# Layer of each module, by the longest matching prefix. A module may import modules of lower layers;
# within one layer, only modules of its own package (checked acyclic below).
LAYERS = {
    "shortvid": 0, "shortvid.errors": 0, "shortvid.files": 0, "shortvid.machine": 0, "shortvid.metrics": 0,
    "shortvid.policy": 1, "shortvid.extras": 1, "shortvid.decode": 1, "shortvid.synth": 1,
    "shortvid.data": 2, "shortvid.models": 2, "shortvid.plots": 2,
    "shortvid.run": 3,
    "shortvid.export": 4,
    "shortvid.quantize": 5,
    "shortvid.infer": 6,  # inference: classifier, backends, batch, store
    "shortvid.train": 7, "shortvid.evaluate": 7,
    "shortvid.serve": 8, "shortvid.judge": 8,  # the HTTP service (and the old inference paths, deprecated)
    "shortvid.ablate": 9, "shortvid.demo": 9, "shortvid.distributed": 9,
    "shortvid.cli": 10,
    "shortvid.__main__": 11,
}


def layer(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module}: no layer in LAYERS; add it (and to docs/architecture.md)")


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = ast.parse(path.read_text(), str(path))
    return found


def runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *runtime_nodes(child)])
            continue
        yield node
        yield from runtime_nodes(node)


def imports(module: str, tree: ast.Module, is_package: bool) -> list[tuple[str, list[str]]]:
    """(imported module, names) for every import the module runs, functions' included."""
    here = module if is_package else module.rsplit(".", 1)[0]
    found = []
    for node in runtime_nodes(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[:len(here.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "shortvid" or target.startswith("shortvid."):
                found.append((target, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.startswith("shortvid")]
    return found


@pytest.fixture(scope="module")
def graph():
    trees = modules()
    packages = {path for path in trees if (PACKAGE.parent / path.replace(".", "/") / "__init__.py").exists()}
    edges = {}
    for module, tree in trees.items():
        edges[module] = imports(module, tree, module in packages)
    return trees, edges


def test_every_import_points_down(graph):
    trees, edges = graph
    wrong = []
    for module, targets in edges.items():
        for target, names in targets:
            # `from package import module` names a module: judge the module itself
            resolved = [f"{target}.{name}" if f"{target}.{name}" in trees else target for name in names] or [target]
            for imported in resolved:
                if imported == module:
                    continue
                below = layer(imported) < layer(module)
                same_package = layer(imported) == layer(module) and package_of(imported) == package_of(module)
                if not (below or same_package or imported == "shortvid"):
                    wrong.append(f"{module} (layer {layer(module)}) imports {imported} (layer {layer(imported)})")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_no_import_cycles(graph):
    trees, edges = graph
    successors = {module: set() for module in trees}
    for module, targets in edges.items():
        for target, names in targets:
            for name in names or [""]:
                candidate = f"{target}.{name}" if f"{target}.{name}" in trees else target
                if candidate in trees and candidate != module and candidate != "shortvid":
                    successors[module].add(candidate)
    state: dict[str, int] = {}

    def visit(module, path):
        state[module] = 1
        for nxt in successors[module]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [module, nxt]))
            if nxt not in state:
                visit(nxt, path + [module])
        state[module] = 2

    for module in trees:
        if module not in state:
            visit(module, [])


def test_no_import_cycles_between_packages(graph):
    """Between top-level packages too (``shortvid.infer`` below ``shortvid.train``, ``shortvid.serve``
    above it)."""
    trees, edges = graph
    between = {}
    for module, targets in edges.items():
        for target, names in targets:
            for imported in [f"{target}.{n}" if f"{target}.{n}" in trees else target for n in names] or [target]:
                if imported != "shortvid" and package_of(imported) != package_of(module):
                    between.setdefault(package_of(module), set()).add(package_of(imported))
    state: dict[str, int] = {}

    def visit(package, path):
        state[package] = 1
        for nxt in between.get(package, ()):
            assert state.get(nxt) != 1, "package import cycle: " + " -> ".join(path + [package, nxt])
            if nxt not in state:
                visit(nxt, path + [package])
        state[package] = 2

    for package in between:
        if package not in state:
            visit(package, [])


def test_no_private_name_is_imported_across_modules(graph):
    _, edges = graph
    private = [f"{module} imports {target}.{name}" for module, targets in edges.items() for target, names in targets
               for name in names if name.startswith("_") and not name.startswith("__")]
    assert not private, private


@pytest.mark.slow
def test_inference_imports_without_the_training_code():
    code = ("import sys; import shortvid.infer, shortvid.export, shortvid.serve.http, shortvid.serve.server; "
            "print(sorted(m for m in sys.modules if m.startswith('shortvid.train')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_a_missing_extra_names_itself_and_how_to_install_it(monkeypatch, capsys, tmp_path):
    from shortvid import extras
    from shortvid.cli import main

    monkeypatch.setitem(extras.EXTRAS, "onnx", ("shortvid_no_such_module",))
    with pytest.raises(extras.MissingExtraError, match=r"pip install 'shortvid\[onnx\]'"):
        extras.require("onnx", "ONNX export")
    assert main(["export", str(tmp_path)]) == 2
    assert "pip install 'shortvid[onnx]'" in capsys.readouterr().err


BLOCK_EXTRAS = """
import importlib.abc, importlib.machinery, sys
EXTRAS = {"fastapi", "fastapi_offline", "uvicorn", "starlette", "python_multipart", "multipart", "onnx",
          "onnxruntime", "matplotlib", "ray", "pyarrow"}
class Missing(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    # found (so that libraries probing with find_spec carry on), but not importable
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in EXTRAS:
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r}", name=spec.name)
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, Missing())
from shortvid.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_the_core_runs_without_the_extras(trained_run, small_videos, tmp_path):
    """Without fastapi, uvicorn, onnx, onnxruntime and matplotlib: prediction works, and the service
    says which extra it needs."""
    video = str(small_videos["v0.mp4"])
    predicted = subprocess.run([sys.executable, "-c", BLOCK_EXTRAS, "predict", str(trained_run), video,
                                "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0 and '"labels"' in predicted.stdout, predicted.stderr
    served = subprocess.run([sys.executable, "-c", BLOCK_EXTRAS, "serve", str(trained_run), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert served.returncode == 2 and "pip install 'shortvid[serve]'" in served.stderr, served.stderr
    on_ray = subprocess.run([sys.executable, "-c", BLOCK_EXTRAS, "predict", str(trained_run), video, "--engine", "ray",
                             "--out", str(tmp_path / "rows")], capture_output=True, text=True, timeout=300)
    assert on_ray.returncode == 2 and "pip install 'shortvid[ray]'" in on_ray.stderr, on_ray.stderr


@pytest.mark.parametrize("old, name, new", [("shortvid.serve.classifier", "Classifier", "shortvid.infer.classifier"),
                                            ("shortvid.serve.classifier", "OnnxBackend", "shortvid.infer.backends"),
                                            ("shortvid.serve.batch", "classify_many", "shortvid.infer.batch"),
                                            ("shortvid.serve.store", "PredictionStore", "shortvid.infer.store")])
def test_the_old_inference_paths_still_import_and_warn(old, name, new):
    """The documented paths of before ``shortvid.infer`` give the same objects for one release, warning
    where they moved."""
    import importlib

    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved to {new}\.{name}"):
        moved = getattr(module, name)
    assert moved is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError):
        _ = module.no_such_name
