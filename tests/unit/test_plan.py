"""The placement plan (`--plan`) and the placement decisions it reads.

Profiles are the committed ones in configs/, checked against the committed cluster
descriptions in cluster/; one test builds a real multi-node `ray.cluster_utils.Cluster`
whose nodes declare GPUs (declared resources: no GPU is needed to schedule against
them) and plans against its live node list. That test starts Ray: run it under
/tmp/cpu.lock on shared machines.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ResourcesConfig, load_config
from pipelines.placement import Ask, learner_ask, reference_scorer_ask
from pipelines.plan import PlanError, check_plan, load_cluster, pack, show_plan, stage_groups

ROOT = Path(__file__).resolve().parents[2]
GPU = ROOT / "configs" / "gpu-cluster.yaml"
CPU = ROOT / "configs" / "cpu-demo.yaml"
CLUSTERS = ["cluster/aws.yaml", "cluster/gcp.yaml", "cluster/kuberay/raycluster.yaml", "cluster/kuberay/rayjob.yaml"]


def gpu_cfg(*overrides: str):
    return load_config(GPU, list(overrides))


# ------------------------------------------------------------------ the reference scorer's device


@pytest.mark.parametrize("gpus,resources,expected", [
    (0.0, {}, Ask(0.0)),
    (0.0, {"learner_node": 1}, Ask(0.0)),  # CPU learners: the scorer shares the CPU, pinned nowhere
    (1.0, {}, Ask(1.0, 1.0, {})),
    (1.0, {"learner_node": 1}, Ask(1.0, 1.0, {"learner_node": 1})),
    (0.5, {"learner_node": 1}, Ask(1.0, 0.5, {"learner_node": 1})),
    (2.0, {"learner_node": 2}, Ask(1.0, 1.0, {"learner_node": 1})),  # forward only: one GPU is enough
])
def test_reference_scorer_takes_the_learners_kind_of_device(gpus, resources, expected):
    r = ResourcesConfig(learner_gpus=gpus, learner_resources=resources)
    ask = reference_scorer_ask(r)
    assert ask == expected
    assert ask.device == learner_ask(r).device == ("cuda" if gpus else "cpu")
    assert ask.options()["num_gpus"] == expected.num_gpus
    assert ask.options().get("resources", {}) == expected.resources


def test_ask_bundle_leaves_out_zeros():
    assert Ask(0.0, 0.0, {"buffer_node": 1}).bundle() == {"buffer_node": 1.0}
    assert Ask(4, 1, {"sampler_node": 1}).bundle() == {"CPU": 4.0, "GPU": 1.0, "sampler_node": 1.0}


# ------------------------------------------------------------------ what each stage holds


def test_stage_groups_follow_the_run():
    plan = stage_groups(gpu_cfg())
    assert list(plan) == ["critic", "rft", "dpo", "eval"]
    names = {s: [g.name for g in gs] for s, gs in plan.items()}
    assert "reference scorer" in names["dpo"] and all("reference scorer" not in names[s] for s in ("critic", "rft"))
    assert not any(n.startswith("learners") for n in names["eval"])
    scorer = next(g for g in plan["dpo"] if g.name == "reference scorer")
    assert scorer.ask.num_gpus == 1 and scorer.ask.resources == {"learner_node": 1}


def test_rule_only_run_places_critics_without_gpus():
    plan = stage_groups(gpu_cfg("run.stages=[rft,eval]"))  # no critic stage: the rule grades
    critics = [g for gs in plan.values() for g in gs if g.name.startswith("critics")]
    assert critics and all(g.ask.num_gpus == 0 and not g.runs_model for g in critics)
    assert "critic" not in plan


def test_stages_are_planned_in_the_order_they_run():
    assert list(stage_groups(gpu_cfg("run.stages=[eval,dpo,critic,rft]"))) == ["critic", "rft", "dpo", "eval"]


def test_untrained_critic_has_no_stage_but_its_judge_runs_later():
    plan = stage_groups(gpu_cfg("critic.train=false"))
    assert "critic" not in plan
    assert any(g.name == "critics (judge model)" for g in plan["rft"])  # rule_else_model: the base model judges


# ------------------------------------------------------------------ both profiles pass


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_gpu_profile_fits_each_described_cluster(cluster):
    text, problems = check_plan(gpu_cfg(), str(ROOT / cluster))
    assert problems == []
    for stage in ("critic", "rft", "dpo", "eval"):
        assert f"{stage}: fits" in text
    assert "reference scorer" in text


def test_cpu_profile_fits_this_machine():
    text, problems = check_plan(load_config(CPU))
    assert problems == [] and "fits this machine" in text


def test_plan_cli_exit_codes(capsys):
    from pipelines.self_critique import main

    assert main(["--config", str(GPU), "--plan", "--cluster", str(ROOT / CLUSTERS[0])]) == 0
    assert "stage dpo" in capsys.readouterr().out
    assert main(["--config", str(GPU), "--plan", "--cluster", str(ROOT / CLUSTERS[0]), "resources.learner_gpus=0"]) == 2
    assert "reference scorer" in capsys.readouterr().err


# ------------------------------------------------------------------ what the plan rejects


def test_reference_scorer_on_a_cpu_only_node_is_rejected():
    """The GPU profile with CPU learners: the reference scorer would run the 1.5B model on a CPU."""
    with pytest.raises(PlanError) as e:
        show_plan(gpu_cfg("resources.learner_gpus=0"), str(ROOT / "cluster/aws.yaml"))
    msg = str(e.value)
    assert "reference scorer" in msg and "stage(s) dpo" in msg and "asks for no GPU" in msg
    assert "Qwen/Qwen2.5-Math-1.5B-Instruct" in msg


def test_learners_pinned_to_the_cpu_only_head_are_rejected():
    _, problems = check_plan(gpu_cfg("resources.learner_resources={buffer_node: 1}"), str(ROOT / "cluster/aws.yaml"))
    scorer = [p for p in problems if p.startswith("reference scorer")]
    assert len(scorer) == 1 and "no node of" in scorer[0] and "buffer_node=1" in scorer[0]


def test_gpu_model_without_any_gpu_is_a_cpu_profile_and_passes_the_device_rule():
    cfg = gpu_cfg("resources.learner_gpus=0", "resources.samplers.num_gpus=0", "resources.critics.num_gpus=0")
    _, problems = check_plan(cfg, str(ROOT / "cluster/aws.yaml"))
    assert not any("asks for no GPU" in p for p in problems)


def test_more_samplers_than_the_cluster_can_hold():
    _, problems = check_plan(gpu_cfg("resources.samplers.num_actors=17"), str(ROOT / "cluster/aws.yaml"))
    assert problems and all(p.endswith("lower the pools or raise the node counts") for p in problems)
    assert all("1 of" in p and "cluster/aws.yaml together" in p and "sampler_node=1" in p for p in problems)
    assert len(problems) == 4  # every stage holds the samplers


def test_dpo_needs_a_learner_gpu_for_the_scorer():
    """4 learners fill one 4-GPU learner node; DPO's scorer needs a fifth learner GPU."""
    nodes, _ = load_cluster(ROOT / "cluster/aws.yaml")
    one_learner_node = [n if n.name != "learner_gpu" else type(n)(n.name, n.resources, 1, False) for n in nodes]
    from pipelines.plan import fit_problems

    problems, fits = fit_problems(stage_groups(gpu_cfg()), one_learner_node, "one learner node")
    assert [p.split(":")[0] for p in problems] == ["dpo"]
    assert any(f.startswith("rft: fits") for f in fits)


def test_pack_uses_existing_nodes_before_adding():
    nodes, cap = load_cluster(ROOT / "cluster/aws.yaml")
    added, left = pack(nodes, [{"buffer_node": 1.0}], cap)
    assert added == {} and left == []
    added, left = pack(nodes, [{"GPU": 1.0, "sampler_node": 1.0}] * 5, cap)
    assert added == {"sampler_gpu": 2} and left == []


def test_unknown_cluster_file_is_a_plan_error(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("kind: Deployment\n")
    with pytest.raises(PlanError, match="neither a cluster-launcher config nor a KubeRay"):
        load_cluster(bad)
    with pytest.raises(PlanError, match="does not exist"):
        load_cluster(tmp_path / "missing.yaml")


# ------------------------------------------------------------------ a live cluster with GPU nodes


@pytest.fixture
def gpu_cluster():
    """Head (CPU only, buffer_node) + sampler, critic and learner nodes that declare GPUs."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0, "resources": {"buffer_node": 1}})
    c.add_node(num_cpus=2, num_gpus=2, resources={"sampler_node": 2})
    c.add_node(num_cpus=1, num_gpus=1, resources={"critic_node": 1})
    c.add_node(num_cpus=2, num_gpus=2, resources={"learner_node": 2})
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


SMALL = ["resources.samplers.num_actors=2", "resources.samplers.num_cpus=1", "resources.critics.num_actors=1",
         "resources.critics.num_cpus=1", "resources.learner_workers=1", "resources.learner_cpus=1"]


def test_plan_against_a_live_cluster_with_gpu_nodes(gpu_cluster):
    from pipelines.plan import connect_and_show

    addr = [f"resources.ray_address={gpu_cluster.address}"]
    assert connect_and_show(gpu_cfg(*SMALL, *addr), "live") == 0
    # the scorer takes the learner node's second GPU: two learners leave it none in DPO
    with pytest.raises(PlanError) as e:
        connect_and_show(gpu_cfg(*SMALL, "resources.learner_workers=2", *addr), "live")
    assert str(e.value).count("do not fit") == 1 and "dpo:" in str(e.value)
    with pytest.raises(PlanError, match="reference scorer .* asks for no GPU"):
        connect_and_show(gpu_cfg(*SMALL, "resources.learner_gpus=0", *addr), "live")
    with pytest.raises(PlanError, match="the live cluster.s nodes"):  # the full profile: 4-CPU samplers, 8 of them
        connect_and_show(gpu_cfg(*addr), "live")
