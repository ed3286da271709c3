"""One definition per setting: every user-facing default is written once, in config.py.

The CLI, the served model (pyfunc and its signature) and the library's functions take
their defaults from the schemas of :mod:`sa2_pipeline.config`; no other module writes a
literal default for a setting the schemas define, and no mirror dataclass copies a schema.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

from sa2_pipeline import config

SRC = Path(__file__).resolve().parents[1] / "src" / "sa2_pipeline"

#: Every field of the schemas (their names are the settings users set).
SCHEMAS = [config.PredictionConfig, config.EvaluationConfig, config.InferenceConfig,
           config.InstanceConfig, config.RegistryConfig, config.TrainingConfig,
           config.RetrainingConfig, config.ReportingConfig]
#: Settings whose name alone says what they are, wherever they appear.
SETTINGS = ("threshold", "overlap", "tta", "precision", "promotion_margin",
            "gate_confidence", "class_tolerance", "gate_resamples", "gate_seed",
            "min_distance", "min_size", "thumbnail_side", "boundary_tolerance", "batch_size",
            "patch_size", "num_threads")


def _literal_defaults(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, name) of every function argument or dataclass-style field named like a
    setting whose default is a literal number, string or bool."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults,
                             strict=True))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
                      if d is not None]
            found += [(d.lineno, a.arg) for a, d in pairs
                      if a.arg in SETTINGS and isinstance(d, ast.Constant)
                      and d.value is not None]
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                        and item.target.id in SETTINGS
                        and isinstance(item.value, ast.Constant)
                        and item.value.value is not None):
                    found.append((item.lineno, item.target.id))
    return found


def test_no_module_but_config_writes_a_literal_default_for_a_setting():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "config.py" and path.parent == SRC:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        offenders += [f"{path.relative_to(SRC)}:{line} {name}"
                      for line, name in _literal_defaults(tree)]
    assert not offenders, ("take these defaults from sa2_pipeline.config instead:\n"
                           + "\n".join(offenders))


def test_the_scan_finds_a_repeated_default():
    tree = ast.parse("def f(x, threshold: float = 0.5, *, tta=False): ...\n"
                     "class S:\n    overlap: float = 0.25\n    name: str = 'x'\n")
    assert sorted(name for _, name in _literal_defaults(tree)) == ["overlap", "threshold",
                                                                    "tta"]


def test_config_holds_each_prediction_default_once():
    base = {f.name: f.default for f in dataclasses.fields(config.PredictionConfig)}
    for schema in (config.EvaluationConfig, config.InferenceConfig):
        fields = {f.name: f.default for f in dataclasses.fields(schema)}
        assert {k: fields[k] for k in base} == base, schema.__name__
        # inherited, not redeclared: the class body does not write them again
        assert not set(base) & set(schema.__dict__.get("__annotations__", {}))


def test_cli_segment_defaults_are_the_schema_s():
    from sa2_pipeline.cli import segment

    options = {p.name: p for p in segment.params}
    cfg = config.InferenceConfig()
    compared = 0
    for field in dataclasses.fields(config.InferenceConfig):
        if field.name in options and not options[field.name].required:
            assert options[field.name].default == getattr(cfg, field.name), field.name
            compared += 1
    assert compared >= 6, f"only {compared} CLI options map onto InferenceConfig fields"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_served_model_s_defaults_are_the_schema_s():
    from sa2_pipeline.tracking.mlflow_model import model_signature
    from sa2_pipeline.tracking.pyfunc import PARAM_DEFAULTS

    specs = {p.name: p.default for p in model_signature().params.params}
    for name in ("threshold", "tta"):
        assert PARAM_DEFAULTS[name] == getattr(config.PredictionConfig, name)
        assert specs[name] == getattr(config.PredictionConfig, name)


def test_library_functions_default_to_the_schema_s_threshold():
    from sa2_pipeline.inference.predict import Predictor, probabilities_to_mask
    from sa2_pipeline.metrics.instances import extract_instances
    from sa2_pipeline.metrics.objects import object_scores
    from sa2_pipeline.metrics.segmentation import batch_dice_from_logits

    for function in (probabilities_to_mask, Predictor.predict_mask, extract_instances,
                     object_scores, batch_dice_from_logits):
        default = inspect.signature(function).parameters["threshold"].default
        assert default == config.PredictionConfig.threshold, function.__qualname__


def test_no_mirror_dataclass_copies_a_schema():
    """No dataclass outside config.py has most of a schema's fields (a renamed copy)."""
    schema_fields = {s.__name__: {f.name for f in dataclasses.fields(s)} for s in SCHEMAS}
    mirrors = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "config.py" and path.parent == SRC:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef) or not any(
                    isinstance(d, ast.Call | ast.Name | ast.Attribute)
                    and "dataclass" in ast.unparse(d) for d in node.decorator_list):
                continue
            fields = {i.target.id for i in node.body
                      if isinstance(i, ast.AnnAssign) and isinstance(i.target, ast.Name)}
            for name, theirs in schema_fields.items():
                shared = fields & theirs
                if len(shared) >= 3 and len(shared) >= len(fields) / 2:
                    mirrors.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} "
                                   f"repeats {name} fields {sorted(shared)}")
    assert not mirrors, "\n".join(mirrors)
