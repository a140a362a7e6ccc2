"""In-place weight swaps between tiny judges on vLLM's CPU build: each line should show the
target judge's digit (9 or 2). Before actors/vllm_ext.py, a plain reload_weights left the tied LM
head's oneDNN plan on the start model's embedding, and judge 2 -> judge 9 wrote "Score:" followed
by neither digit (2026-11-29, AMD EPYC). Needs the test cache's tiny models (run the
critic-selection tests once). `./dev python bench/checks/judge_weight_swap.py`"""
import os, ray
from actors.critic import CriticWorker
from core.problem_gen import generate_problems
from core.records import Sample
ray.init(num_cpus=4, include_dashboard=False)
c = os.environ["SELFCRITIQUE_CACHE"] + "/models/"
mk = lambda p, v: ray.remote(CriticWorker).options(num_cpus=1).remote("model_rule_cap", c + p, v, dict(max_model_len=512, kv_cache_gib=1.0), 24, 7.0, 5.0)
P = [Sample(p, 0, p.reference) for p in generate_problems(3, "train", (1, 2), 0)]
for start, to in (("tiny-judge-9", "tiny-judge-9"), ("tiny-llama-0", "tiny-judge-2"), ("tiny-judge-2", "tiny-judge-9")):
    w = mk(start, "start")
    ray.get(w.ensure_checkpoint.remote(c + to, "to"))
    gs = ray.get(w.judge_texts.remote(P))
    print(f"{start} -> {to}:", [(g.score, g.analysis[:40]) for g in gs][:2], flush=True)
    ray.kill(w)
