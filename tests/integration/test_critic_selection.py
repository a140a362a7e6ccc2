"""A critic-graded stage on real Ray and real vLLM engines: the critic's score decides what
RFT keeps, and the rule check (math-verify) can only lower it.

The judges are the tiny test model after a few seconds of plain-torch SFT to always write
one fixed critique ("... Score: 9" or "... Score: 2"): a judge whose verdict the test knows,
served by a real vLLM engine through the real CriticWorker.
"""

from __future__ import annotations

import functools
from collections import Counter
import json
import os
from pathlib import Path

import pytest
import ray

from actors.buffer import Buffer
from actors.critic import CriticWorker
from actors.engine import SamplingSpec
from actors.pool import ActorPool
from actors.sampler import SamplerWorker
from actors.stream import run_rollout
from core.answers import extract_final_answer, normalise_answer
from core.config import ModelConfig
from core.grading import rft_policy
from core.problem_gen import generate_problems

pytestmark = pytest.mark.integration

ENGINE = dict(max_model_len=512, kv_cache_gib=1.0)
SPEC = SamplingSpec(n=4, temperature=0.6, top_p=1.0, max_new_tokens=48)
# The prompt the warm model was taught on (conftest): with another one it gets only about 1 in 8
# right, and a stage of 24 samples with none right made these tests flaky.
SYSTEM = ModelConfig().system_prompt


def fixed_judge(tiny_model: str, score: int) -> str:
    """The tiny model taught to answer every judge prompt with the same critique."""
    from core.models import built_once

    return str(built_once(Path(os.environ["SELFCRITIQUE_CACHE"]) / "models" / f"tiny-judge-{score}",
                          lambda out: _teach_fixed_critique(tiny_model, score, out)))


def _teach_fixed_critique(tiny_model: str, score: int, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.models import publish_checkpoint
    from core.prompts import judge_messages
    from learners.batching import collate, encode, pad_id
    from learners.losses import sft_loss

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    probs = generate_problems(16, "train", (1, 2), 1)
    target = f"The work is checked.\nScore: {score}"
    data = [encode(tok, judge_messages(p, p.reference), target, 256) for p in probs]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(40):
        b = collate([data[i] for i in torch.randperm(len(data))[:8].tolist()], pad_id(tok))
        sft_loss(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]).backward()
        opt.step()
        opt.zero_grad()
    publish_checkpoint(model.to(torch.bfloat16), tok, out, f"fixed judge, score {score}")


@pytest.fixture(scope="module")
def pools(ray_local, warm_tiny_model, tiny_model):
    """One sampler and one critic for the module; each test swaps its judge's weights in place.

    The swap between two fine-tuned judges is itself under test: on vLLM's CPU build a plain
    reload left the tied LM head on the first judge's embedding, and judge 2 wrote no score
    (actors/vllm_ext.py)."""
    samplers = ActorPool(SamplerWorker, 1, (warm_tiny_model, "warm", ENGINE, SYSTEM), num_cpus=1, name="samplers")
    critics = ActorPool(CriticWorker, 1, ("model_rule_cap", fixed_judge(tiny_model, 9), "tiny-judge-9", ENGINE, 24,
                                          7.0, 5.0), num_cpus=1, name="critics")
    samplers.wait_ready(timeout=600)
    critics.wait_ready(timeout=600)
    yield samplers, critics
    samplers.shutdown()
    critics.shutdown()


@pytest.fixture(scope="module")
def problems(pools):
    """Three problems the warm model answers right and three it answers wrong, so each stage sees
    both verdicts. The model is too small to read the numbers: it repeats answers it memorised,
    so on six problems drawn blind a stage of 24 samples sometimes had no right answer at all."""
    samplers, _ = pools
    candidates = generate_problems(48, "train", (1, 2), 0)
    _, greedy = ray.get(samplers.submit(0, "generate", candidates, SamplingSpec(n=1, max_new_tokens=48)))
    samplers.finished(0)
    right = [s.problem for s in greedy if _answer(s.response) == normalise_answer(s.problem.answer)]
    wrong = [s.problem for s in greedy if _answer(s.response) != normalise_answer(s.problem.answer)]
    assert len(right) >= 3 and len(wrong) >= 3, f"greedy: {len(right)} right, {len(wrong)} wrong of 48"
    return right[:3] + wrong[:3]


def _answer(text: str) -> str:
    return normalise_answer(extract_final_answer(text)[0])


def _stage(pools, problems, judge_path: str, run_dir: Path, judge_rule_failures: bool):
    samplers, critics = pools
    critics.call_all("ensure_checkpoint", judge_path, Path(judge_path).name)
    critics.call_all("set_policy", "model_rule_cap", judge_rule_failures)
    policy = functools.partial(rft_policy, threshold=7.0, max_kept=4, system_prompt=SYSTEM)
    buf = Buffer.remote(str(run_dir), capacity=256, group_size=SPEC.n, group_policy=policy)
    run_rollout(problems, samplers, critics, buf, SPEC, batch_prompts=3)
    ray.kill(buf)
    graded = {}
    for line in (run_dir / "decisions.jsonl").read_text().splitlines():
        d = json.loads(line)
        graded[d["key"]] = d
    lineage = [json.loads(x) for x in (run_dir / "lineage.jsonl").read_text().splitlines()]
    return lineage, graded


def _kept(row: dict, decisions: dict) -> bool:
    key = f"{row['sample']['problem']['id']}#{row['sample']['sample_index']}"
    return decisions[key]["kept"]


def test_passing_critic_keeps_only_rule_correct_and_the_rule_only_lowers(pools, problems, tiny_model, tmp_path):
    lineage, decisions = _stage(pools, problems, fixed_judge(tiny_model, 9), tmp_path / "pass", judge_rule_failures=True)
    assert len(lineage) == 6 * SPEC.n
    grades = [r["grade"] for r in lineage]
    assert all(g["model_score"] == 9 for g in grades)  # the judge graded every sample
    right = [r for r in lineage if r["grade"]["rule_verdict"] == "correct"]
    wrong = [r for r in lineage if r["grade"]["rule_verdict"] == "incorrect"]
    print("rule verdicts:", Counter(r["grade"]["rule_verdict"] for r in lineage))
    assert right and wrong, "the warm tiny model should give both right and wrong answers"
    assert all(r["grade"]["grader"] == "model, lowered by rule" and r["grade"]["score"] == 4 for r in wrong)
    assert not any(_kept(r, decisions) for r in wrong)  # never kept, though the critic said 9
    kept = [r for r in lineage if _kept(r, decisions)]
    assert kept and all(r["grade"]["grader"] == "model" and r["grade"]["score"] == 9 for r in kept)


def test_failing_critic_keeps_nothing_even_where_the_rule_says_right(pools, problems, tiny_model, tmp_path):
    """Also the default judging: the judge reads only what the rule has not already failed."""
    lineage, decisions = _stage(pools, problems, fixed_judge(tiny_model, 2), tmp_path / "fail", judge_rule_failures=False)
    right = [r for r in lineage if r["grade"]["rule_verdict"] == "correct"]
    print("rule verdicts:", Counter(r["grade"]["rule_verdict"] for r in lineage))
    assert right and all(r["grade"]["score"] == 2 and r["grade"]["grader"] == "model" for r in right)
    wrong = [r for r in lineage if r["grade"]["rule_verdict"] == "incorrect"]
    assert wrong and all(r["grade"]["model_score"] is None and r["grade"]["grader"] == "rule" for r in wrong)
    assert not any(d["kept"] for d in decisions.values())
    assert all("< 7" in d["reason"] for d in decisions.values() if d.get("reason", "").startswith("score"))
