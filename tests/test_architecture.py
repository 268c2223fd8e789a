"""The architecture holds: imports run one way, and a measure or an evidence type is one
module (the report, the MLflow payload, the card and the schema follow its declarations)."""

import ast
import copy
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import wsca_audit as wa
from wsca_audit.evidence import Evidence, register_evidence, unregister_evidence
from wsca_audit.measures import Measure, get_measures, register_measure, unregister_measure

ROOT = Path(wa.__file__).parent
INTEGRATIONS = ROOT.parent / "integrations"

# The stages, lowest first: a module imports only from its own layer or lower ones.
# (docs/architecture.md draws the same table.)
LAYERS = [
    {"errors", "version"},
    {
        "formatting",
        "naming",
        "validation",
        "metrics",
        "store",
        "distributed",
        "shards",
        "schema",
        "resampling",
    },
    {"stats", "verdict", "render", "head_kinds"},
    {"primary", "heads", "embeddings", "correlation", "head_search"},
    {"levels", "taskdata", "measures", "support", "decision", "performance"},
    {"evidence", "figures"},
    {"report"},
    {"analysis"},
    {"collect"},
    {"fix"},
    {"card"},
    {"tracking", "runs"},
    {"cli"},
    {"__init__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _package(rel: tuple[str, ...]) -> str:
    """The package a module file of wsca_audit belongs to (``rel``: its parts, no suffix)."""
    return ".".join(["wsca_audit", *rel[:-1]])


def _imports(path: Path, package: str) -> set[str]:
    """Dotted names under ``wsca_audit`` that a file imports (lazy imports count too);
    ``from a import b`` yields both ``a`` and ``a.b``."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [mod + "." + a.name for a in node.names]
                if node.module:  # `from . import x` imports x, not the package
                    names.append(mod)
            elif (node.module or "").startswith("wsca_audit"):
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("wsca_audit")]
        else:
            continue
        for n in names:
            if n.startswith("wsca_audit"):
                out.add(n)
    return out


def _library_modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("").parts
        if rel[0] == "demo":
            continue
        yield path, rel


def _top(dotted: str) -> str | None:
    """The top-level module of ``wsca_audit`` a dotted name lives in; a name that is no
    module (``from wsca_audit import __version__``) lives in the package's ``__init__``."""
    parts = dotted.split(".")
    if parts[0] != "wsca_audit":
        return None
    if len(parts) == 1 or (parts[1] not in RANK and parts[1] not in ("demo", "integrations")):
        return "__init__"
    return parts[1]


def test_library_imports_run_one_way_and_never_reach_the_demo():
    problems = []
    for path, rel in _library_modules():
        me = rel[0]
        for dotted in _imports(path, _package(rel)):
            top = _top(dotted)
            if top in (None, me, "integrations") or me == "__init__":
                continue
            if top == "demo":
                problems.append(f"{'/'.join(rel)} imports the demo ({dotted})")
            elif top in RANK and RANK[top] > RANK[me]:
                problems.append(f"{'/'.join(rel)} imports upward: {dotted}")
    assert not problems, "\n".join(problems)


def test_every_library_module_is_placed_in_a_layer():
    names = {rel[0] for _, rel in _library_modules()}
    assert names - set(RANK) == set(), "add new modules to LAYERS (and docs/architecture.md)"


def test_no_private_name_is_imported_across_modules():
    bad = []
    for path, rel in _library_modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (
                node.level or (node.module or "").startswith("wsca_audit")
            ):
                bad += [
                    f"{'/'.join(rel)}: {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and a.name != "__version__"
                ]
    assert not bad, bad


def test_integrations_and_the_demo_use_only_the_public_api():
    public_tracking = {"wsca_audit.tracking.check_reachable", "wsca_audit.tracking.fast_fail"}
    problems = []
    for path in [*INTEGRATIONS.glob("*.py"), *(ROOT / "demo").glob("*.py")]:
        package = "wsca_audit.integrations" if path.parent == INTEGRATIONS else "wsca_audit.demo"
        for dotted in _imports(path, package):
            parent, _, name = dotted.rpartition(".")
            if (
                dotted == "wsca_audit"
                or dotted.startswith(package)
                or (parent == "wsca_audit" and name in wa.__all__)
                or dotted in public_tracking
                or dotted == "wsca_audit.tracking"
            ):
                continue
            problems.append(f"{path.name}: {dotted}")
    assert not problems, problems


def _module_graph() -> dict[str, set[str]]:
    """wsca_audit module -> the wsca_audit modules it imports (demo aside)."""
    files = {".".join(["wsca_audit", *rel]).removesuffix(".__init__"): path
             for path, rel in _library_modules()}  # fmt: skip
    graph = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps = set()
        for dotted in _imports(path, package):
            while dotted and dotted not in files:  # `from a import b`: b may be a name
                dotted = dotted.rpartition(".")[0]
            if dotted and dotted != mod:
                deps.add(dotted)
        graph[mod] = deps
    return graph


def test_no_import_circle_inside_the_package():
    graph = _module_graph()
    # a package's __init__ may import its own submodules: that is not a circle unless a
    # submodule imports the package's __init__ back
    circles, done = [], set()

    def visit(node, stack):
        if node in stack:
            circles.append([*stack[stack.index(node) :], node])
            return
        if node in done:
            return
        for nxt in graph.get(node, ()):
            visit(nxt, [*stack, node])
        done.add(node)

    for node in graph:
        visit(node, [])
    assert not circles, circles


# --------------------------------------------------------------------------- toy plug-ins
class ToySpread(Measure):
    """A toy measure: the spread of the embedding's first unit, with a made-up interval."""

    name = "toy_spread"
    label = "toy spread"
    panel = "alignment"
    hatch = "xx"
    schema: ClassVar[dict] = {"$ref": "#/$defs/interval"}

    def compute(self, task):
        z = task.Zs[:, 0]
        value = float(z[task.valid].std())
        return {"value": value, "ci_low": value - 0.1, "ci_high": value + 0.1}


@register_evidence
class ToyEvidence(Evidence):
    """A toy evidence type: one number per entry."""

    kind = "toy"
    section = "toy_section"
    schema: ClassVar[dict] = {
        "type": "object",
        "required": ["score"],
        "properties": {"score": {"type": "number"}},
    }

    @classmethod
    def lines(cls, key, data, tasks):
        return [f"toy '{key}': score {data['score']:.2f}"]

    @classmethod
    def mlflow(cls, key, data):
        return {f"wsca.toy.{key}.score": data["score"]}, {f"wsca.toy.{key}.seen": "yes"}


unregister_evidence("toy")  # registered only inside the test below


@pytest.fixture
def toy_plugins():
    register_measure(ToySpread())
    register_evidence(ToyEvidence)
    yield
    unregister_measure("toy_spread")
    unregister_evidence("toy")


def test_a_new_measure_and_evidence_type_reach_report_mlflow_card_and_schema(
    toy_plugins, digits_std, tmp_path
):
    X, y = digits_std
    X, label = X[:300, 2:14], (y[:300] >= 5).astype(int)
    site = (X[:, 1] > 0).astype(int)
    W = np.zeros((2, 12))
    W[1, 0] = 1.0
    res = wa.analyze(
        X, label, {"site": site}, primary_weight=W, n_bootstrap=20, n_permutations=20,
        progress=False,
    )  # fmt: skip
    block = res.tasks["site"]["toy_spread"]
    assert block["value"] == pytest.approx(1.0, abs=0.05)  # standardised unit
    res.add_evidence(ToyEvidence({"score": 0.25}), key="a")

    # report: JSON (validated against the composed schema), text, HTML, figure
    res.validate()
    assert "toy spread [95% CI]" in res.summary()
    assert "toy 'a': score 0.25" in res.summary()
    html = res.to_html()
    assert "toy spread [95% CI]" in html and "toy &#x27;a&#x27;: score 0.25" in html
    labels = [t.get_text() for t in res.figure().axes[0].get_legend().get_texts()]
    assert "toy_spread" in labels

    # MLflow payload
    metrics, _, tags = wa.mlflow_payload(res)
    assert metrics["wsca.site.toy_spread"] == pytest.approx(block["value"])
    assert metrics["wsca.site.toy_spread_ci_low"] == pytest.approx(block["ci_low"])
    assert metrics["wsca.toy.a.score"] == 0.25 and tags["wsca.toy.a.seen"] == "yes"

    # card
    card = wa.write_model_card(res, tmp_path / "CARD.md").read_text()
    assert "toy spread [95% CI]" in card and "toy 'a': score 0.25" in card

    # schema: the fragments are part of it, and they are enforced
    schema = wa.report_schema()
    assert schema["$defs"]["task"]["properties"]["toy_spread"] == ToySpread.schema
    assert "toy_section" in schema["properties"]["evidence"]["properties"]
    bad = copy.deepcopy(res.to_dict())
    bad["evidence"]["toy_section"]["a"] = {"score": "high"}
    with pytest.raises(wa.AuditError, match="toy_section"):
        wa.validate_report(bad)

    # a saved report reads back with the plug-ins shown
    back = wa.AuditResult.load(res.save(tmp_path / "audit"))
    assert back.summary() == res.summary()


def test_plugins_are_gone_after_unregistering(digits_std):
    assert "toy_spread" not in {m.name for m in get_measures()}
    assert "toy_section" not in wa.report_schema()["properties"]["evidence"]["properties"]


def test_registering_a_clashing_measure_is_an_audit_error():
    class Clash(ToySpread):
        name = "clash"
        key = "usage"

    with pytest.raises(wa.AuditError, match="exists"):
        register_measure(Clash())
    with pytest.raises(wa.AuditError, match="exists"):
        register_measure(get_measures()[0])


def test_shipped_schema_holds_the_builtin_declarations():
    import json
    from importlib.resources import files

    shipped = json.loads((files("wsca_audit.schema") / "report.schema.json").read_text())
    task = shipped["$defs"]["task"]["properties"]
    for m in get_measures():
        assert task[m.report_key] == m.schema, m.name
    from wsca_audit.evidence import evidence_types
    from wsca_audit.report import evidence_section_schema

    sections = shipped["properties"]["evidence"]["properties"]
    for cls in evidence_types():
        assert sections[cls.section] == evidence_section_schema(cls), cls.kind


# --------------------------------------------------------------------------- the map
def test_every_module_appears_in_the_architecture_page():
    """docs/architecture.md is the map of the code as it is: every library module (and
    every integration and test file) is named on it."""
    page = (ROOT.parent / "docs" / "architecture.md").read_text()
    missing = []
    for _path, rel in _library_modules():
        if rel[-1] == "__init__":
            continue
        shown = "/".join(rel) + ".py"
        if f"`{shown}`" not in page and f"`{rel[-1]}.py`" not in page:
            missing.append(shown)
    for path in sorted(INTEGRATIONS.glob("*.py")) + sorted((ROOT.parent / "tests").glob("*.py")):
        if path.name not in ("__init__.py", "conftest.py") and path.stem not in page:
            missing.append(f"{path.parent.name}/{path.name}")
    assert not missing, f"add to docs/architecture.md: {missing}"


def _code_lines(node: ast.AST, source: list[str]) -> int:
    """Lines of code of a function: its body less docstring, comments and blank lines."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                              ast.Constant):  # fmt: skip
        body = body[1:]
    if not body:
        return 0
    lines = source[body[0].lineno - 1 : node.end_lineno]
    return sum(1 for ln in lines if ln.strip() and not ln.strip().startswith("#"))


def test_modules_and_functions_stay_small():
    """The house rule (DESIGN.md): modules under ~650 lines, functions under 80 lines of
    code; past that, split by job (the demo aside)."""
    too_long = []
    for path, rel in _library_modules():
        source = path.read_text().splitlines()
        if len(source) > 650:
            too_long.append(f"{'/'.join(rel)}.py: {len(source)} lines")
        for node in ast.walk(ast.parse("\n".join(source))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(node, source)
                if n > 80:
                    too_long.append(f"{'/'.join(rel)}.py:{node.lineno} {node.name}: {n} LOC")
    assert not too_long, "\n".join(too_long)
