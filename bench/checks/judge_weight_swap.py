"""Reproduces an in-place weight swap that leaves a tiny judge broken on vLLM's CPU build (2026-11-29):
fine-tuned judge 9 -> fine-tuned judge 2 writes no score, while untrained -> judge 2 works.
Needs the test cache's tiny models (run the critic-selection tests once). `./dev python bench/checks/judge_weight_swap.py`"""
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
