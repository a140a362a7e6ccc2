"""Shared fixtures. Integration tests start a real local Ray, real vLLM and DeepSpeed."""

from __future__ import annotations

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
        env = {k: os.environ[k] for k in ("SELFCRITIQUE_CACHE", "DS_ACCELERATOR", "TORCH_EXTENSIONS_DIR",
                                          "HF_HUB_OFFLINE", "VLLM_CPU_KVCACHE_SPACE", "TOKENIZERS_PARALLELISM")}
        env["PYTHONPATH"] = str(ROOT)
        ray.init(address="local", num_cpus=4, include_dashboard=False, runtime_env={"env_vars": env})
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
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.config import ModelConfig
    from core.models import publish_checkpoint
    from core.problem_gen import generate_problems
    from core.prompts import solver_messages
    from learners.batching import collate, encode, pad_id
    from learners.losses import sft_loss

    out = Path(os.environ["SELFCRITIQUE_CACHE"]) / "models" / "tiny-warm-0"
    if (out / ".complete").exists():
        return str(out)
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
        loss = sft_loss(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad()
    publish_checkpoint(model.to(torch.bfloat16), tok, out, f"final loss {float(loss):.3f}")
    return str(out)


# ------------------------------------------------------------------ fault bookkeeping

_FAULTS: list[dict] = []


@pytest.fixture
def fault_log():
    """Record the outcome of an injected fault for docs/results/reliability.json."""

    def record(fault: str, *, survived: bool, lost: int, duplicated: int, **extra):
        _FAULTS.append({"fault": fault, "survived": survived, "items_lost": lost, "items_duplicated": duplicated,
                        **extra})

    return record


def pytest_sessionfinish(session, exitstatus):
    """Write the reliability summary when fault tests ran (bad-input figures come from their suite)."""
    import json

    if not _FAULTS:
        return
    bad = ROOT / "docs" / "results" / "bad_inputs.json"
    bad_inputs = json.loads(bad.read_text()) if bad.exists() else {}
    path = ROOT / "docs" / "results" / "reliability.json"
    # A partial run (-k, one file) updates its faults and keeps the others' last results.
    previous = json.loads(path.read_text()).get("faults", []) if path.exists() else []
    ran = {f["fault"] for f in _FAULTS}
    faults = [f for f in previous if f.get("fault") not in ran] + _FAULTS
    peaks = [f["peak_rss_mb"] for f in faults if f.get("peak_rss_mb")]
    out = {
        "faults_injected": len(faults),
        "faults_survived": sum(f["survived"] for f in faults),
        "bad_inputs_tried": bad_inputs.get("bad_inputs_tried"),
        "bad_inputs_clear": bad_inputs.get("bad_inputs_clear"),
        "items_lost": sum(f["items_lost"] for f in faults),
        "items_duplicated": sum(f["items_duplicated"] for f in faults),
        "peak_rss_mb": max(peaks) if peaks else None,
        "faults": faults,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
