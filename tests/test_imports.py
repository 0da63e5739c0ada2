"""The import structure of the package: folders are layers, and imports point down only.

Every module of ``cspdet/`` is parsed with ``ast`` (nothing is imported); every import counts, at module level or
inside a function (``if TYPE_CHECKING:`` blocks excepted: they never run). The layers, highest first, as the code
has them (``docs`` / ARCHITECTURE.md: "cli -> engine / runtime / export -> models / data -> det")::

    cli                          thin commands
    export                       the writers (+ the benchmark, which evaluates through engine)
    engine                       training, evaluation (loads weights through the runtime)
    runtime                      every weights file opened in one place; Predictor; checkpoint I/O; format table
    models | data                networks | datasets, transforms, loaders (neither imports the other)
    det                          pure tensor functions
    config, fileio, progress,    leaves that every layer may use
    _deprecated, cspdet (version)

``engine``, ``runtime`` and ``export`` are one floor of the architecture; inside it the arrows still point one way
(export -> engine -> runtime), which is what keeps the floor free of cycles.

A function-local import is fine (the commands import lazily so that ``--help`` is fast; optional runtimes load only
when used) as long as it goes down like any other; one whose target imports the importing module back at module
level would be an import cycle in hiding, and fails here. Old import paths that moved are served by
:func:`cspdet._deprecated.moved` (a name looked up through ``importlib`` at attribute access, which imports nothing
at module load and is not an import of the old module's layer).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cspdet"

#: folder (or top-level module) -> its floor; an import must go to a strictly lower floor or stay in its folder
LAYERS = {
    "cli": 6, "export": 5, "engine": 4, "runtime": 3, "models": 2, "data": 2, "det": 1,
    "config": 0, "fileio": 0, "progress": 0, "_deprecated": 0, "coco_classes": 0, "cspdet": 0,
}
#: the leaves' own allowed imports (floor 0 modules importing each other)
LEAF_EDGES = {("config", "fileio")}

#: third-party modules that may be imported inside a function: optional or heavy, loaded only where used
LAZY_THIRD_PARTY = {
    "cv2", "faster_coco_eval", "matplotlib", "nncf", "onnx", "onnxruntime", "onnxsim", "openvino", "PIL",
    "pycocotools", "scipy", "tensorboard", "timm", "torch", "torchvision", "tqdm", "yaml",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cspdet"


class _Imports(ast.NodeVisitor):
    """(target module, function-local?, line) of every import of one module (relative ones resolved)."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.depth = 0
        self.typing_only = False
        self.found: list[tuple[str, bool, int]] = []
        self.typing_found: list[tuple[str, int]] = []  # the imports of ``if TYPE_CHECKING:`` blocks

    def visit_FunctionDef(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            self.typing_only, found = True, self.found
            self.found = []
            for child in node.body:
                self.visit(child)
            self.typing_found += [(target, line) for target, _, line in self.found]
            self.typing_only, self.found = False, found
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, self.depth > 0, node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            # ``from . import x`` / ``from .. import x``: x may be a submodule
            names = [f"{target}.{a.name}" for a in node.names] if not node.module else [target]
        else:
            names = [node.module or ""]
        for name in names:
            self.found.append((name, self.depth > 0, node.lineno))


def _scan() -> tuple[dict[str, Path], list[tuple[str, str, bool, int]], list[tuple[str, str, int]]]:
    modules = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    imports, typing_imports = [], []
    for module, path in modules.items():
        visitor = _Imports(module, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(), str(path)))
        imports += [(module, target, local, line) for target, local, line in visitor.found]
        typing_imports += [(module, target, line) for target, line in visitor.typing_found]
    return modules, imports, typing_imports


def _resolve(target: str, modules: dict[str, Path]) -> str | None:
    """The cspdet module an import names (``cspdet.runtime.open`` for ``from cspdet.runtime.open import x``)."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


MODULES, IMPORTS, TYPING_IMPORTS = _scan()
INTERNAL = [(m, _resolve(t, MODULES), local, line) for m, t, local, line in IMPORTS if t.split(".")[0] == "cspdet"]
TYPING_INTERNAL = [(m, _resolve(t, MODULES), line) for m, t, line in TYPING_IMPORTS if t.split(".")[0] == "cspdet"]


def test_every_folder_has_a_layer():
    assert {_unit(m) for m in MODULES} <= set(LAYERS)


def test_imports_point_down():
    bad = []
    for module, target, _, line in INTERNAL:
        a, b = _unit(module), _unit(target)
        if a == b or (a, b) in LEAF_EDGES or LAYERS[b] < LAYERS[a]:
            continue
        bad.append(f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}: {a} imports {target} ({b} is not below)")
    assert not bad, "imports that point up or sideways:\n" + "\n".join(bad)


def test_no_cycle_between_folders():
    graph = defaultdict(set)
    for module, target, _, _ in INTERNAL:
        if _unit(module) != _unit(target):
            graph[_unit(module)].add(_unit(target))

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    cycles = sorted(u for u in list(graph) if reaches(u, u, set()))
    assert not cycles, f"folders on an import cycle: {cycles}"


def _module_level_closure(start: str, module: str) -> set[str]:
    """Every module that importing ``start`` imports at module level, transitively (``module``'s own packages are
    skipped on the way: their ``__init__`` has run before ``module`` does, so reaching it through them is not a
    cycle of ``module``)."""
    parts = module.split(".")
    own_packages = {".".join(parts[:i]) for i in range(1, len(parts))}
    seen, todo = set(), [start]
    while todo:
        for nxt in _TOP[todo.pop()]:
            if nxt not in seen and nxt not in own_packages:
                seen.add(nxt)
                todo.append(nxt)
    return seen


_TOP: dict[str, set[str]] = defaultdict(set)  # module -> what it imports at module level
for _module, _target, _local, _ in INTERNAL:
    if not _local and _target != _module:
        _TOP[_module].add(_target)
        # importing a.b.c runs a/__init__ and a/b/__init__ first
        _parts = _target.split(".")
        _TOP[_module].update(".".join(_parts[:i]) for i in range(2, len(_parts)))


def test_no_function_local_import_hides_a_cycle():
    """A function-local import of module B from module A is a hidden cycle when B (or what it imports at module
    level, transitively) imports A at module level."""
    hidden = [f"{MODULES[m].relative_to(PACKAGE.parent)}:{line}: imports {t} inside a function, and {t} imports "
              f"{m} at module level" for m, t, local, line in INTERNAL
              if local and t != m and m in _module_level_closure(t, m)]
    assert not hidden, "\n".join(hidden)


def test_no_type_checking_import_hides_a_cycle():
    """The same for ``if TYPE_CHECKING:`` imports: one that only type checkers run, of a module that imports this
    one back, is a cycle kept out of sight (the old ``data/views.py`` -> ``data/loader.py`` for the sampler's type,
    while the loader imported the views; the sampler has its own module now)."""
    # a package naming its own submodules for the type checker (the lazy ``__getattr__`` of engine / runtime) is
    # not a cycle: importing a submodule always runs its package first
    hidden = [f"{MODULES[m].relative_to(PACKAGE.parent)}:{line}: imports {t} under TYPE_CHECKING, and {t} imports "
              f"{m} at module level" for m, t, line in TYPING_INTERNAL
              if t != m and not t.startswith(m + ".") and m in _module_level_closure(t, m)]
    assert not hidden, "\n".join(hidden)


def test_function_local_third_party_imports_are_the_listed_optional_or_heavy_ones():
    stdlib = set(sys.stdlib_module_names)
    lazy = {(t.split(".")[0], f"{MODULES[m].relative_to(PACKAGE.parent)}:{line}") for m, t, local, line in IMPORTS
            if local and t.split(".")[0] not in stdlib | {"cspdet", ""}}
    unlisted = sorted(where + ": " + name for name, where in lazy if name not in LAZY_THIRD_PARTY)
    assert not unlisted, "lazy imports of modules not in LAZY_THIRD_PARTY:\n" + "\n".join(unlisted)


def test_no_private_name_is_imported_across_folders():
    """``from cspdet.x import _helper`` from another folder couples it to that folder's internals (the old
    ``cli/val.py`` -> ``engine.build._upgrade_v1``); across folders, public names only."""
    bad = []
    for module, path in MODULES.items():
        visitor = _Imports(module, path.name == "__init__.py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("cspdet")):
                visitor.found = []
                visitor.visit_ImportFrom(node)
                target = _resolve(visitor.found[0][0], MODULES) if visitor.found else None
                if target is None or _unit(target) == _unit(module):
                    continue
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    bad.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {', '.join(private)}")
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)


@pytest.mark.parametrize(("old", "name", "new"), [
    ("cspdet.export", "load_inference_model", "cspdet.runtime.open"),
    ("cspdet.export.backends", "DeployedDetector", "cspdet.runtime.backends"),
    ("cspdet.export.cpu", "FastCPUDetector", "cspdet.runtime.cpu"),
    ("cspdet.engine.predictor", "Predictor", "cspdet.runtime.predictor"),
    ("cspdet.engine", "Predictor", "cspdet.runtime.predictor"),
    ("cspdet.engine.build", "detector_from_checkpoint", "cspdet.runtime.weights"),
    ("cspdet.engine.checkpoint", "load_checkpoint", "cspdet.runtime.checkpoint"),
    ("cspdet.data.records", "drop_duplicate_boxes_table", "cspdet.data.record_table"),
    ("cspdet.det.dfl", "ciou_loss", "cspdet.det.iou_loss"),
    ("cspdet.det.dfl", "batched_box_ciou", "cspdet.det.iou_loss"),
    # renamed modules: no file at the old path (moved_modules)
    ("cspdet.det.assigner", "SimOTAAssigner", "cspdet.det.simota"),
    ("cspdet.det.assigner", "Assignment", "cspdet.det.simota"),
    ("cspdet.det.losses", "SimOTALoss", "cspdet.det.yolox_loss"),
    ("cspdet.det.losses", "box_iou_loss", "cspdet.det.yolox_loss"),
    ("cspdet.det.losses", "encode_l1_targets", "cspdet.det.yolox_loss"),
    ("cspdet.models.head", "DecoupledHead", "cspdet.models.yolox_head"),
    ("cspdet.models.head", "HeadOutputs", "cspdet.models.yolox_head"),
    ("cspdet.models.neck", "CSPPAN", "cspdet.models.csp_pan"),
    ("cspdet.models.elan", "C2fStage", "cspdet.models.elan_blocks"),
    ("cspdet.models.elan", "SPPF", "cspdet.models.elan_blocks"),
    ("cspdet.models.elan", "C2fNet", "cspdet.models.elan_backbone"),
    ("cspdet.models.elan_neck", "C2fPAN", "cspdet.models.elan_pan"),
])
def test_moved_names_still_import_with_a_deprecation_warning(old, name, new):
    import importlib

    with pytest.warns(DeprecationWarning, match=f"{old}.{name} moved to {new}"):
        value = getattr(importlib.import_module(old), name)
    expected = {"load_inference_model": "open_model"}.get(name, name)
    assert value is getattr(importlib.import_module(new), expected)


def test_renamed_modules_import_the_old_ways_and_only_their_old_names():
    """``from old import X``, ``import old`` and ``from package import old`` all work; a name the old module never
    had is a plain ``AttributeError`` / ``ImportError``, and a real module is never shadowed by the stand-in."""
    import importlib
    import warnings

    import cspdet.det
    from cspdet.det import simota

    with pytest.warns(DeprecationWarning, match="cspdet.det.losses.SimOTALoss moved to cspdet.det.yolox_loss"):
        from cspdet.det.losses import SimOTALoss
    assert SimOTALoss is cspdet.det.SimOTALoss
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # importing the old module alone warns nothing: only its names do
        old = importlib.import_module("cspdet.models.elan")
        from cspdet.det import assigner
    assert old.__name__ == "cspdet.models.elan" and assigner is importlib.import_module("cspdet.det.assigner")
    with pytest.warns(DeprecationWarning):
        assert assigner.SimOTAAssigner is simota.SimOTAAssigner
    with pytest.raises(AttributeError, match="'cspdet.models.elan' has no attribute 'NotThere'"):
        old.NotThere  # noqa: B018
    with pytest.raises(ImportError):
        from cspdet.det.assigner import pack_targets  # noqa: F401  (simota imports it, the shim never had it)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("cspdet.det.not_a_module")
    assert importlib.import_module("cspdet.det.simota").__file__.endswith("simota.py")
