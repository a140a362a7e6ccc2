"""What one learner start costs before any training: wall seconds and CPU seconds of the machine.

    ./dev bench learner_start [--starts 3]      # writes bench/results/learner_start.json

A learner start is a Ray Train run: its controller, helper actors and worker processes, each
importing torch and Ray Train, then DeepSpeed and the model. The suite makes about twenty of
them and the demo three, so on 2 cores their CPU is CI time. Four variants, each in a fresh
driver with its own local Ray head: Ray Train's defaults with the environment passed as a
runtime_env; the same with `pipelines.runtime.local_head_env`'s trims (no preemption watcher, no
metrics); the trimmed environment inherited from the driver (`start_local_head`, what the
pipeline and the tests do), which starts workers without Ray's setup_worker.py; and that with
`learners.ray_trainer.BufferFedTorchTrainer` (no dataset manager, and no placement-group cleaner
where no dashboard runs), what the learner now uses. Each start trains one micro-batch of 8 short SFT examples on the tests' tiny model, one worker; the first
start of each driver is dropped (the op and page caches). Machine CPU seconds come from
/proc/stat, so nothing else may run meanwhile. One more start per driver, not in the timings,
records which processes its CPU went to (bench/proc_cpu.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, write_result
from proc_cpu import ProcessCPU, machine_cpu_seconds

VARIANTS = ("ray_defaults", "local_head_env", "inherited_env", "fewer_helpers")
# The first three run Ray Train's own TorchTrainer, as the learner did when they were first measured.
STOCK_TRAINER = VARIANTS[:3]


def one_driver(variant: str, starts: int) -> list[dict]:
    """Runs in its own process: a local head, then `starts` learner runs."""
    import ray

    from actors.buffer import Buffer
    from core.models import build_tiny_model
    from core.records import SFTExample
    from learners.trainer import LearnJob, run_learner
    from pipelines.runtime import local_head_env, start_local_head, start_local_ray

    if variant in STOCK_TRAINER:
        import learners.ray_trainer
        from ray.train.torch import TorchTrainer

        learners.ray_trainer.BufferFedTorchTrainer = TorchTrainer  # run_learner imports it at each call
    model = str(build_tiny_model())
    env = {k: os.environ[k] for k in ("SELFCRITIQUE_CACHE", "DS_ACCELERATOR", "TORCH_EXTENSIONS_DIR",
                                      "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM")}
    env["PYTHONPATH"] = str(ROOT)
    if variant in ("inherited_env", "fewer_helpers"):
        start_local_head(local_head_env(env), num_cpus=4, include_dashboard=False)
    else:
        env = local_head_env(env) if variant == "local_head_env" else env
        start_local_ray(address="local", num_cpus=4, include_dashboard=False, runtime_env={"env_vars": env})
    def one_start() -> tuple[float, float, dict]:
        d = Path(tempfile.mkdtemp(prefix="learner-start-"))
        buf = Buffer.remote(str(d / "buf"), capacity=100)
        items = [SFTExample(f"ex{k}", [{"role": "user", "content": f"What is {k} plus 1?"}], f"It is {k + 1}.")
                 for k in range(8)]
        ray.get(buf.put_items.remote([ray.put(x) for x in items]))
        ray.get(buf.close.remote())
        job = LearnJob(name="start", kind="sft", model_path=model, out_dir=str(d / "hf"), storage_dir=str(d / "state"),
                       buffer=buf, lr=1e-3, micro_batch_size=8, checkpoint_every=1000, max_failures=0,
                       warmup_steps=0, num_workers=1, cpus_per_worker=1, epochs=1)
        c0, t0 = machine_cpu_seconds(), time.perf_counter()
        summary = run_learner(job)
        return time.perf_counter() - t0, machine_cpu_seconds() - c0, summary

    rows = []
    for _ in range(starts):
        wall, cpu, summary = one_start()
        rows.append({"wall_s": wall, "cpu_s": cpu, "micro_steps": summary["micro"]})
    with ProcessCPU() as procs:  # one more start, not timed above: which processes its CPU went to
        one_start()
    rows.append({"process_cpu_s": procs.by_kind()})
    ray.shutdown()
    return rows


def summarise(rows: list[dict]) -> dict:
    *timed, procs = rows
    kept = timed[1:]
    return {"starts_kept": len(kept), "wall_s_mean": statistics.mean(r["wall_s"] for r in kept),
            "cpu_s_mean": statistics.mean(r["cpu_s"] for r in kept), "runs": timed,
            "process_cpu_s_extra_start": procs["process_cpu_s"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--starts", type=int, default=3, help="learner starts per variant (the first is dropped)")
    ap.add_argument("--driver", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.driver:
        print("ROWS " + json.dumps(one_driver(args.driver, args.starts)), flush=True)
        return
    result: dict = {"what": "one learner start (Ray Train run, 1 worker, 1 micro-batch, tiny model)"}
    for variant in VARIANTS:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_TRAIN_")}
        out = subprocess.run([sys.executable, __file__, "--driver", variant, "--starts", str(args.starts)],
                             cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        rows = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("ROWS "))[5:])
        result[variant] = summarise(rows)
        print(variant, {k: v for k, v in result[variant].items() if k != "runs"}, flush=True)
    for a, b in (("ray_defaults", "local_head_env"), ("local_head_env", "inherited_env"),
                 ("ray_defaults", "inherited_env"), ("inherited_env", "fewer_helpers"), ("ray_defaults", "fewer_helpers")):
        for what in ("cpu", "wall"):
            result[f"{what}_ratio_{a}_vs_{b}"] = result[a][f"{what}_s_mean"] / result[b][f"{what}_s_mean"]
    result["machine"] = machine() | {"commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                                              capture_output=True, text=True).stdout.strip()}
    result["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    write_result("learner_start", result)


if __name__ == "__main__":
    main()
