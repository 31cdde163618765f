"""The house rules: one Method interface whose settings the config check and run() share, and imports that
point one way (workflow -> methods/runtimes -> algorithms -> models/data/io)."""
import ast
import copy
import dataclasses
from pathlib import Path

import pytest

from vitcompress.config import ConfigError, resolve
from vitcompress.methods import METHODS, StepContext, get_method
from vitcompress.settings import Settings

PKG = Path(__file__).resolve().parents[1] / "vitcompress"


def _imports(path: Path) -> set[str]:
    """Every vitcompress module a file imports, at any depth of its code (function-level imports too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vitcompress"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("vitcompress")}
    return out


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


# Layers, lowest first: a module may import its own layer and those below it, never above.
LAYERS = [
    {"vitcompress.errors", "vitcompress.io", "vitcompress.settings", "vitcompress.sections", "vitcompress.joblog",
     "vitcompress.stats", "vitcompress.plotting"},
    {"vitcompress.artifacts", "vitcompress.models", "vitcompress.data", "vitcompress.measure", "vitcompress.train",
     "vitcompress.attention", "vitcompress.workers"},
    {"vitcompress.fqvit", "vitcompress.pruning", "vitcompress.tome", "vitcompress.runtimes",
     "vitcompress.quantized_state"},  # algorithms, runtimes
    {"vitcompress.methods"},
    {"vitcompress.config", "vitcompress.preflight", "vitcompress.workflow", "vitcompress.pipeline", "vitcompress.report",
     "vitcompress.scaling", "vitcompress.smoke", "vitcompress.cli", "vitcompress.__main__", "vitcompress",
     "vitcompress.environment"},
]


def _layer(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        if module in layer or any(module.startswith(m + ".") for m in layer if m != "vitcompress"):
            return i
    raise AssertionError(f"{module} is in no layer of this test: add it to LAYERS")


def test_imports_point_down_and_nothing_below_the_methods_imports_them():
    wrong = []
    for path in PKG.rglob("*.py"):
        mod = _module(path)
        for imp in _imports(path):
            if _layer(imp) > _layer(mod):
                wrong.append(f"{mod} imports {imp}")
    assert not wrong, wrong


def test_no_import_circle_between_modules():
    graph = {_module(p): {i for i in _imports(p) if i != _module(p)} for p in PKG.rglob("*.py")}
    graph = {m: {i for i in deps if i in graph and not m.startswith(i + ".") and i != "vitcompress"}
             for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m, trail):
        if state.get(m) == 1:
            raise AssertionError("import circle: " + " -> ".join(trail + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in graph[m]:
            if not (d.endswith(".methods") and m.startswith("vitcompress.methods.")):  # the registry's __init__
                visit(d, trail + [m])
        state[m] = 2

    for m in graph:
        visit(m, [])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_lives_in_the_module_of_its_name(name):
    assert get_method(name).__module__ == f"vitcompress.methods.{name}"


def test_job_priority_and_labels_read_the_settings_defaults(raw_params):
    """The scheduler's priority and a row label's {field} come from the Settings, defaults included."""
    from vitcompress.config import chain_settings, fill_label
    from vitcompress.workflow import job_priority

    assert job_priority({"method": "prune_gates", "train": {}}) == 1 / 1000  # epochs' default: 1
    assert job_priority({"method": "nystrom", "landmarks": 4, "finetune_epochs": 3, "train": {}}) == 3 / 1000
    steps = {"vit": {"method": "train"}, "q": {"method": "lsq"}}
    assert fill_label("LSQ {bits}-bit", chain_settings(steps, ["vit", "q"])) == "LSQ 4-bit"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_declares_frozen_settings_whose_keys_are_the_checked_ones(name, raw_params):
    method = get_method(name)
    assert issubclass(method.Settings, Settings) and method.Settings.__dataclass_params__.frozen
    assert set(method.keys) == set(method.Settings.keys())
    s = method.Settings.from_step({k: v.default for k, v in method.Settings.__dataclass_fields__.items()
                                   if v.default is not dataclasses.MISSING} | _required(name))
    for key in list(method.Settings.__dataclass_fields__)[:1]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(s, key, None)


def _required(name):
    return {"prune": {"ratio": 0.1}, "structured_prune": {"ratio": 0.1}, "tome": {"r": 1}, "nystrom": {"landmarks": 4},
            "distill": {"teacher": "vit"}}.get(name, {})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_no_method_reads_a_setting_from_the_step_dict(name):
    """run() and the hooks read the Settings dataclass, so a default cannot differ from the checked one."""
    method = get_method(name)
    source = Path(__import__(method.__module__, fromlist=["x"]).__file__)
    keys = set(method.keys)
    reads = []
    def is_step(node) -> bool:  # `step` or `ctx.step`
        return isinstance(node, ast.Name) and node.id == "step" or isinstance(node, ast.Attribute) and node.attr == "step"

    for node in ast.walk(ast.parse(source.read_text())):
        if (isinstance(node, ast.Subscript) and is_step(node.value) and isinstance(node.slice, ast.Constant)
                and node.slice.value in keys):
            reads.append(f"[{node.slice.value!r}] line {node.lineno}")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and is_step(node.func.value) and node.args and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in keys):
            reads.append(f".get({node.args[0].value!r}) line {node.lineno}")
    assert not reads, f"{source.name} reads settings from a dict: {reads}"


def test_defaults_once_gate_training_runs_the_checked_default_epochs(random_vit, digits_file):
    """prune_gates validated `epochs` with default 1 and trained 2: now the one default is what runs."""
    train = {"epochs": 9, "batch_size": 64, "lr": 0.001, "max_steps": 2, "num_workers": 0}
    ctx = StepContext(step={"id": "gates", "method": "prune_gates", "train": train}, dataset="digits",
                      data_file=digits_file, device="cpu", parent=random_vit)
    gated = get_method("prune_gates")().execute(ctx)
    assert gated.meta["steps"][-1]["training"]["epochs"] == get_method("prune_gates").Settings().epochs == 1


def test_qat_min_size_has_one_default_for_the_check_and_the_run(raw_params):
    """QAT validated `min_size` with default 0.0 and quantized with 0.01: now the one default is 0.01."""
    from vitcompress.methods.qat import QATMethod

    s = get_method("lsq").settings({"method": "lsq"})
    assert s.min_size == 0.01 and QATMethod.quantizer_kwargs(s)["min_size"] == 0.01
    raw = copy.deepcopy(raw_params)
    raw["profiles"]["demo"]["steps"]["lsq"]["min_size"] = -0.5
    with pytest.raises(ConfigError, match=r"steps.lsq.min_size = -0.5 must be at least 0"):
        resolve(raw)


def test_the_runner_checks_the_parents_kind_once_for_every_method(random_vit, digits_file):
    """execute() asks check_parent before run(), so no method's run() has to remember it (prune forgot)."""
    int8_parent = copy.copy(random_vit)
    int8_parent.meta = {"steps": [{"id": "q", "method": "dynamic_ptq"}]}
    for name in ("prune", "prune_gates", "nystrom", "fq_vit", "lsq", "onnx"):
        ctx = StepContext(step={"id": name, "method": name, "ratio": 0.1, "landmarks": 2}, dataset="digits",
                          data_file=digits_file, device="cpu", parent=int8_parent)
        with pytest.raises(ValueError, match=rf"step '{name}' \({name}\) needs .* already int8"):
            get_method(name)().execute(ctx)


@pytest.mark.parametrize("step, message", [
    ({"method": "prune"}, r"steps.x needs `ratio`: the fraction r of dimensions to remove"),
    ({"method": "prune", "ratio": "a lot"}, r"steps.x.ratio = 'a lot' has the wrong type: use a number"),
    ({"method": "nystrom", "landmarks": 1.5}, r"steps.x.landmarks = 1.5: give a count"),
    ({"method": "onnx", "min_agreement": 0}, r"steps.x.min_agreement = 0 must be in \(0, 1\]"),
    ({"method": "ort_int8_static", "reduce_range": "maybe"}, r"reduce_range = 'maybe': use auto"),
    ({"method": "fq_vit", "exclude": []}, r"unknown key 'steps.x.exclude' for method 'fq_vit'"),
])
def test_settings_errors_name_the_key_the_value_and_the_fix(step, message):
    method = get_method(step["method"])
    with pytest.raises(ConfigError, match=message):
        method.check_step(step, "steps.x", {"models": {}, "steps": {}})


def test_the_configuration_reference_lists_every_methods_keys_as_generated():
    from vitcompress.settings import markdown_keys

    doc = (PKG.parent / "docs" / "configuration.md").read_text()
    section = doc.split("<!-- keys: generated by `vitcompress methods --keys` -->\n", 1)[1].split("<!-- /keys -->")[0]
    assert section == markdown_keys(METHODS), "docs/configuration.md is stale: paste `vitcompress methods --keys`"
