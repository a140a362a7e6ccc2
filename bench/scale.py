"""Streaming scale-out on a simulated multi-node cluster (ray.cluster_utils.Cluster).

Synthetic samplers and critics (a fixed latency per batch standing in for GPU time)
feed the real buffer and the real streaming driver; a consumer takes and acks like a
learner. Reports graded items/s against node count, and the ideal (nodes x per-node
rate) as the baseline, so the ratio shows what the buffer and driver overheads cost.
Writes bench/results/scale.json.

    ./dev bench scale [--nodes 1 2 4] [--batch 64] [--latency 0.25]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

from common import machine, write_result

from actors.synthetic import SyntheticCritic, SyntheticSampler


def measure(nodes: int, batch_prompts: int, n: int, latency: float, rounds: int) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from actors.buffer import Buffer
    from actors.engine import SamplingSpec
    from actors.pool import ActorPool
    from actors.stream import run_rollout
    from core.problem_gen import generate_problems

    per_node = 2  # sampler actors (and critic actors) per simulated node
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"head": 1}})
    for _ in range(nodes):
        c.add_node(num_cpus=2, resources={"worker_node": 2 * per_node})
    c.wait_for_nodes()
    ray.init(address=c.address, runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
    samplers = ActorPool(SyntheticSampler, nodes * per_node, (latency, 128, 400), num_cpus=0.5,
                         resources={"worker_node": 1})
    critics = ActorPool(SyntheticCritic, nodes * per_node, (latency / 4,), num_cpus=0.5, resources={"worker_node": 1})
    samplers.wait_ready()
    critics.wait_ready()
    problems = generate_problems(batch_prompts * nodes * per_node * rounds, "train", (1, 2, 3), 9)
    spec = SamplingSpec(n=n)
    with tempfile.TemporaryDirectory() as d:
        buf = Buffer.options(resources={"head": 1}).remote(d, 4096)
        taken = []

        def consume():
            while True:
                got = ray.get(buf.take.remote("learner", 256, 5.0))
                if got["items"]:
                    ray.get(buf.ack.remote("learner", got["lease"], [k for k, _ in got["items"]], len(taken)))
                    taken.extend(k for k, _ in got["items"])
                if got["done"]:
                    return

        t = threading.Thread(target=consume)
        t.start()
        t0 = time.perf_counter()
        rep = run_rollout(problems, samplers, critics, buf, spec, batch_prompts)
        t.join()
        secs = time.perf_counter() - t0
    ray.shutdown()
    c.shutdown()
    # samplers are the slowest stage and critics overlap with them: each sampler actor can
    # deliver batch_prompts * n items per `latency` seconds
    ideal = nodes * per_node * batch_prompts * n / latency
    return {"nodes": nodes, "items_per_s": len(taken) / secs, "ideal_items_per_s": ideal,
            "ratio_vs_ideal": len(taken) / secs / ideal, "items": len(taken), "graded": rep.graded,
            "seconds": secs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--batch", type=int, default=8, help="prompts per sampler call")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.25, help="seconds per sampler batch (stand-in for GPU time)")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    points = [measure(k, args.batch, args.n, args.latency, args.rounds) for k in args.nodes]
    write_result("scale", {
        "points": points,
        "settings": {"batch_prompts": args.batch, "n": args.n, "sampler_latency_s": args.latency,
                     "critic_latency_s": args.latency / 4, "samplers_per_node": 2, "rounds": args.rounds},
        "machine": machine(),
        "note": "simulated nodes share this machine's cores; synthetic workers sleep instead of computing",
    })


if __name__ == "__main__":
    main()
