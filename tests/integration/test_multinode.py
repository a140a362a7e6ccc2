"""The tiny pipeline on a simulated multi-node cluster (`ray.cluster_utils.Cluster`).

Each node advertises one custom resource, so samplers, critics, the buffer and the
learner land on different raylets, and every sample crosses nodes through the object
store.
"""

from __future__ import annotations

import json

import pytest

from core.config import load_config
from tests.integration.test_pipeline import ROOT, tiny_overrides

pytestmark = pytest.mark.integration

NODES = {"sampler_node": 2, "critic_node": 1, "learner_node": 1, "buffer_node": 1}


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
    for res, cpus in NODES.items():
        c.add_node(num_cpus=cpus, resources={res: 8})
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def test_pipeline_across_nodes(cluster, warm_tiny_model, tmp_path):
    import ray
    from ray.util.state import list_actors

    from pipelines.self_critique import run

    run_dir = tmp_path / "run"
    cfg = load_config(ROOT / "configs/cpu-demo.yaml", tiny_overrides(run_dir, warm_tiny_model) + [
        f"resources.ray_address={cluster.address}", "run.stages=[rft,dpo,eval]", "eval.mathusereval_path=''",
        "resources.samplers.num_actors=2", "resources.samplers.custom_resources={sampler_node: 1}",
        "resources.critics.custom_resources={critic_node: 1}", "resources.learner_resources={learner_node: 1}",
        "resources.buffer_resources={buffer_node: 1}", "logging.wandb=false",
    ])
    summary = run(cfg)
    assert set(summary["accuracy"]) == {"base", "rft", "dpo"}
    node_of = {}
    for n in ray.nodes():
        for res in NODES:
            if res in n["Resources"]:
                node_of[res] = n["NodeID"]
    placed = {}
    for a in list_actors(limit=1000, detail=True):
        placed.setdefault(a.class_name, set()).add(a.node_id)
    assert placed["SamplerWorker"] == {node_of["sampler_node"]}
    assert placed["CriticWorker"] == {node_of["critic_node"]}
    assert placed["Buffer"] == {node_of["buffer_node"]}
    assert placed["RayTrainWorker"] == {node_of["learner_node"]}
    # every RFT prompt x sample crossed from the sampler node to the buffer node exactly once
    lines = (run_dir / "rft" / "rollout" / "lineage.jsonl").read_text().splitlines()
    keys = {(json.loads(x)["sample"]["problem"]["id"], json.loads(x)["sample"]["sample_index"]) for x in lines}
    assert len(lines) == len(keys) == 8 * 3
