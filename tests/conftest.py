"""Shared fixtures. Integration tests start a real local Ray, real vLLM and DeepSpeed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SELFCRITIQUE_CACHE", str(ROOT / ".cache"))
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(os.environ["SELFCRITIQUE_CACHE"]) / "torch_extensions"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub here: fail fast instead of retrying
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from core.models import build_tiny_model

    return str(build_tiny_model())


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray per test module (modules that build their own clusters shut it down)."""
    import ray

    if not ray.is_initialized():
        from pipelines.runtime import local_head_env, start_local_head

        # the workers inherit this process's environment (set at the top of this file)
        start_local_head(local_head_env({"PYTHONPATH": str(ROOT)}), num_cpus=4, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def warm_tiny_model(tiny_model) -> str:
    """The tiny model after a short plain-torch SFT on generated problems' reference solutions.

    A random tiny model writes no numbers, so no grader can tell its answers apart. This
    one has memorised the first training problems well enough that sampling gives a mix of
    right and wrong answers: the rule grader, RFT selection and DPO pairing all get real
    signal, in seconds. Cached next to the tiny model.
    """
    from core.models import built_once

    return str(built_once(Path(os.environ["SELFCRITIQUE_CACHE"]) / "models" / "tiny-warm-0",
                          lambda out: _warm_up(tiny_model, out)))


def _warm_up(tiny_model: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.config import ModelConfig
    from core.models import publish_checkpoint
    from core.problem_gen import generate_problems
    from core.prompts import solver_messages
    from learners.batching import collate, encode, pad_id

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    system = ModelConfig().system_prompt
    probs = generate_problems(24, "train", (1, 2), 0)
    data = [encode(tok, solver_messages(p, system), p.reference, 160) for p in probs]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for step in range(150):
        idx = torch.randperm(len(data))[:8].tolist()
        b = collate([data[i] for i in idx], pad_id(tok))
        loss = _response_nll(model, b)
        loss.backward()
        opt.step()
        opt.zero_grad()
    publish_checkpoint(model.to(torch.bfloat16), tok, out, f"final loss {float(loss):.3f}")


def _response_nll(model, batch):
    """sft_loss, with the LM head applied only where a label is: the head over a 49k vocabulary
    at every prompt position was most of the warm-up's time."""
    import torch.nn.functional as F

    from learners.losses import IGNORE

    hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    keep = batch["labels"] != IGNORE
    return F.cross_entropy(model.lm_head(hidden[keep]), batch["labels"][keep])


# ------------------------------------------------------------------ fault bookkeeping
#
# Each fault test reports what it observed (item keys per stage) against the fault-free
# expectation; the counts, and whether the test passed, become docs/results/reliability.json
# at the end of the session, whatever order the tests ran in.

_FAULTS: list[dict] = []
_FAILED: set[str] = set()


class ItemCountError(AssertionError):
    """A fault test saw an item lost, duplicated, or one it did not expect."""


def stage_counts(expected: set[str], observed) -> dict:
    """Counts for one stage. A list of keys must hold each expected key exactly once; a
    number (work done, retries included) must be at least the expected count."""
    if isinstance(observed, int):
        return {"observed": observed, "lost": max(0, len(expected) - observed), "duplicated": 0,
                "unexpected": 0, "redone": max(0, observed - len(expected))}
    seen = set(observed)
    return {"observed": len(observed), "lost": len(expected - seen), "duplicated": len(observed) - len(seen),
            "unexpected": len(seen - expected)}


def check_counts(fault: str, stages: dict[str, dict]) -> None:
    bad = {name: c for name, c in stages.items() if c["lost"] or c["duplicated"] or c["unexpected"]}
    if bad:
        raise ItemCountError(f"{fault}: " + "; ".join(
            f"{name}: {c['lost']} lost, {c['duplicated']} duplicated, {c['unexpected']} unexpected"
            for name, c in bad.items()))


def broken_variants(observed: dict[str, list]):
    """The same observations with one item lost, or one duplicated, in one stage."""
    for name, keys in observed.items():
        if isinstance(keys, list) and keys:
            yield f"{name}: one lost", {**observed, name: keys[1:]}
            yield f"{name}: one duplicated", {**observed, name: keys + keys[:1]}


class FaultLog:
    """Record a fault test's observed counts, then fail it if an item was lost or duplicated.

    Every call also checks itself on deliberately broken copies of the observations (one
    item dropped, one repeated, per stage): each must fail the check, or the test fails.
    """

    def __init__(self, test: str):
        self.test = test

    @staticmethod
    def check(fault: str, expected: set[str], observed: dict) -> dict[str, dict]:
        """Per-stage counts; ItemCountError if any item was lost, duplicated or unexpected."""
        stages = {name: stage_counts(expected, obs) for name, obs in observed.items()}
        check_counts(fault, stages)
        return stages

    def __call__(self, fault: str, expected: set[str], observed: dict, **extra) -> dict:
        stages = {name: stage_counts(expected, obs) for name, obs in observed.items()}
        record = {"fault": fault, "test": self.test, "expected": len(expected), "stages": stages,
                  "items_lost": sum(c["lost"] for c in stages.values()),
                  "items_duplicated": sum(c["duplicated"] + c["unexpected"] for c in stages.values()), **extra}
        _FAULTS.append(record)
        check_counts(fault, stages)
        for label, broken in broken_variants(observed):
            try:
                self.check(fault, expected, broken)
            except ItemCountError:
                continue
            raise AssertionError(f"{fault}: the count check passed a broken variant ({label})")
        return record

    @staticmethod
    def acked(acks_jsonl: Path) -> list[str]:
        """Keys consumed, replayed from a buffer's acks log: an undo (a learner rewound to a
        checkpoint) takes back one ack; a key acked twice without one appears twice."""
        keys: list[str] = []
        for line in acks_jsonl.read_text().splitlines():
            row = json.loads(line)
            if row.get("undo"):
                keys.remove(row["key"])
            else:
                keys.append(row["key"])
        return keys


@pytest.fixture
def fault_log(request) -> FaultLog:
    return FaultLog(request.node.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if outcome.get_result().failed:
        _FAILED.add(item.nodeid)


def reliability_summary(faults: list[dict], bad_inputs: dict) -> dict:
    peaks = [f["peak_rss_mb"] for f in faults if f.get("peak_rss_mb")]
    return {
        "faults_injected": len(faults),
        "faults_survived": sum(f["survived"] for f in faults),
        "items_expected": sum(f["expected"] for f in faults),
        "items_lost": sum(f["items_lost"] for f in faults),
        "items_duplicated": sum(f["items_duplicated"] for f in faults),
        "bad_inputs_tried": bad_inputs.get("bad_inputs_tried"),
        "bad_inputs_clear": bad_inputs.get("bad_inputs_clear"),
        "peak_rss_mb": max(peaks) if peaks else None,
        "faults": sorted(faults, key=lambda f: f["fault"]),
    }


def pytest_sessionfinish(session, exitstatus):
    """Write the reliability summary when fault tests ran (bad-input figures come from their suite).

    Under pytest-xdist each worker hands its faults to the controller, which writes the file once."""
    for f in _FAULTS:  # survived: its test passed, and it lost and duplicated nothing
        if "survived" not in f:  # set where the test ran (a worker, or this process)
            f["survived"] = f["test"] not in _FAILED and not f["items_lost"] and not f["items_duplicated"]
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:
        worker_output["faults"] = json.dumps(_FAULTS)
        return
    if not _FAULTS:
        return
    bad = ROOT / "docs" / "results" / "bad_inputs.json"
    path = ROOT / "docs" / "results" / "reliability.json"
    # A partial run (-k, one file) updates its faults and keeps the others' last results,
    # as long as those were recorded in this format (observed counts, not literals).
    previous = json.loads(path.read_text()).get("faults", []) if path.exists() else []
    ran = {f["fault"] for f in _FAULTS}
    kept = [f for f in previous if f.get("fault") not in ran and "stages" in f]
    out = reliability_summary(kept + _FAULTS, json.loads(bad.read_text()) if bad.exists() else {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist, in the controller: a worker's fault records."""
    _FAULTS.extend(json.loads(getattr(node, "workeroutput", {}).get("faults", "[]")))


# ------------------------------------------------------------------ order for two workers
#
# `./dev test` runs two pytest-xdist workers, one test module at a time each (--dist loadfile,
# no reordering). Each worker starts with two modules, and takes the next one whenever two or
# fewer of its tests are still pending. So: the two longest modules first, then two short ones
# (a worker's second module, long enough in tests that it takes nothing more meanwhile), then
# the other long modules, longest first, each followed by a short one, then the rest.
# By their time in the suite (bench/results/ci_time.json and the run it replaced; a module's
# wall time beside the other worker): a long one left for the end leaves one worker alone on it.
LONGEST_FIRST = ["integration/test_pipeline.py", "integration/test_learner.py", "integration/test_sweep.py",
                 "integration/test_rollout.py", "integration/test_critic_selection.py",
                 "integration/test_cluster_entry.py", "integration/test_faults.py", "integration/test_models.py"]


def _long_rank(module: str) -> int | None:
    return next((i for i, name in enumerate(LONGEST_FIRST) if module.endswith(name)), None)


def module_order(tests_per_module: dict[str, int]) -> list[str]:
    """Module paths (with their test counts, in collection order) in the order to hand out."""
    long = sorted((m for m in tests_per_module if _long_rank(m) is not None), key=_long_rank)
    short = sorted((m for m in tests_per_module if _long_rank(m) is None), key=lambda m: -tests_per_module[m])
    out = long[:2] + short[:2]
    short = short[2:]
    for m in long[2:]:
        out.append(m)
        if short:
            out.append(short.pop(0))
    return out + short


def pytest_collection_modifyitems(session, config, items):
    counts: dict[str, int] = {}
    for it in items:
        counts[str(it.path)] = counts.get(str(it.path), 0) + 1
    rank = {m: i for i, m in enumerate(module_order(counts))}
    items.sort(key=lambda it: rank[str(it.path)])  # stable: tests keep their order within a module
