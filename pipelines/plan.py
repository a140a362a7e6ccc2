"""The placement plan: what every stage's actors and worker groups ask Ray for, and
whether a described cluster can hold it. `--plan` prints it before anything starts.

Two things fail the plan, each naming the component and its config key:
- a component that runs a GPU profile's model (samplers, judge critics, learners, the
  DPO reference scorer) asks for no GPU: it would run at CPU speed on any free core;
- a stage's requests cannot all be placed on the described cluster (a launcher YAML's
  node types up to their max_workers, a KubeRay manifest's groups up to maxReplicas, a
  live cluster's nodes, or this machine for a local run). Packing is Ray's own
  autoscaler bin-packing, so "fits" means what the autoscaler would launch.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from core.config import Config, ConfigError, PoolResources
from pipelines.placement import (Ask, buffer_ask, engine_ask, learner_ask, reference_scorer_ask,
                                 rule_critic_ask)


class PlanError(ConfigError):
    """The plan cannot run as configured; the message lists every problem."""


@dataclass(frozen=True)
class Group:
    """`count` actors (or train workers) of one kind, each asking for `ask`."""

    name: str
    key: str  # the config keys that set the request
    count: int
    ask: Ask
    tp: int | None = None  # engines only: tensor-parallel size
    memory: str = "-"
    runs_model: bool = False


@dataclass(frozen=True)
class NodeType:
    """A kind of node: `max_count` of them at most; `fixed` ones exist already (a head, a live node)."""

    name: str
    resources: dict[str, float]
    max_count: int = 1
    fixed: bool = True


# ------------------------------------------------------------------ what each stage asks for


def _engine_memory(pool: PoolResources) -> str:
    if pool.num_gpus > 0:
        return "KV cache: vLLM's default 90% of each GPU"
    return f"KV cache: {pool.kv_cache_gib:g} GiB host RAM"


def _engines(cfg: Config) -> tuple[Group, Group, Group]:
    r = cfg.resources
    samplers = Group("samplers", "resources.samplers", r.samplers.num_actors, engine_ask(r.samplers),
                     r.samplers.tensor_parallel_size, _engine_memory(r.samplers), True)
    judges = Group("critics (judge model)", "resources.critics", r.critics.num_actors, engine_ask(r.critics),
                   r.critics.tensor_parallel_size, _engine_memory(r.critics), True)
    rule = Group("critics (rule check only)", "resources.critics", r.critics.num_actors, rule_critic_ask(r.critics))
    return samplers, judges, rule


def stage_groups(cfg: Config) -> dict[str, list[Group]]:
    """Stage -> the groups holding resources while it runs.

    Sampler and critic pools live from first use to the end of the run, and a critic
    pool that has started its judge keeps it, so a stage counts them as they are by then.
    """
    r, c = cfg.resources, cfg.critic
    samplers, judges, rule = _engines(cfg)
    learners = Group("learners (Ray Train)", "resources.learner_*", r.learner_workers, learner_ask(r), runs_model=True)
    buffer = Group("buffer", "resources.buffer_resources", 1, buffer_ask(r))
    scorer = Group("reference scorer", "resources.learner_* (follows the learners)", 1, reference_scorer_ask(r),
                   runs_model=True)
    policy = c.policy if "critic" in cfg.run.stages else "rule"
    judge, out = False, {}
    for stage in ("critic", "rft", "dpo", "eval"):  # the order they run in, whatever the list's order
        if stage not in cfg.run.stages or (stage == "critic" and not c.train):
            continue
        judge = judge or stage == "critic" or (stage in ("rft", "dpo") and policy != "rule")
        groups = [samplers, judges if judge else rule, buffer]
        if stage != "eval":
            groups.append(learners)
        if stage == "dpo":
            groups.append(scorer)
        out[stage] = groups
    return out


# ------------------------------------------------------------------ checks


def device_problems(cfg: Config, plan: dict[str, list[Group]]) -> list[str]:
    """In a profile that runs its model on GPUs, every component that runs it must have one."""
    model_groups: dict[str, tuple[Group, list[str]]] = {}
    for stage, groups in plan.items():
        for g in groups:
            if g.runs_model:
                model_groups.setdefault(g.name, (g, []))[1].append(stage)
    on_gpu = [name for name, (g, _) in model_groups.items() if g.ask.num_gpus > 0]
    if not on_gpu:
        return []  # a CPU profile
    return [f"{g.name} ({g.key}) in stage(s) {', '.join(stages)} runs the model {cfg.model.name} but asks for no "
            f"GPU, while {', '.join(on_gpu)} run it on GPUs: it would run at CPU speed on whichever node has a "
            f"free core" for name, (g, stages) in model_groups.items() if g.ask.num_gpus <= 0]


def _fits(node: dict[str, float], bundle: dict[str, float]) -> bool:
    return all(v <= node.get(k, 0.0) + 1e-9 for k, v in bundle.items())


def pack(nodes: list[NodeType], bundles: list[dict[str, float]], max_added: int | None = None
         ) -> tuple[dict[str, int], list[dict[str, float]]]:
    """Ray's autoscaler packing: fill the nodes that exist, then add node types as it would.

    Returns the nodes added per type and the bundles left unplaced.
    """
    from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
    from ray.autoscaler._private.resource_demand_scheduler import (_default_utilization_scorer,
                                                                   get_bin_pack_residual, get_nodes_for)

    left, _ = get_bin_pack_residual([dict(n.resources) for n in nodes if n.fixed], bundles)
    types = {n.name: {"resources": dict(n.resources), "max_workers": n.max_count} for n in nodes if not n.fixed}
    if not left or not types:
        return {}, left
    cap = sum(n.max_count for n in nodes if not n.fixed) if max_added is None else max_added
    scorer = functools.partial(_default_utilization_scorer,
                               node_availability_summary=NodeAvailabilitySummary(node_availabilities={}))
    added, left = get_nodes_for(types, {}, "", cap, left, scorer)
    return dict(added), left


def _fmt(res: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(res.items())) or "nothing"


def _unplaceable(plan: dict[str, list[Group]], nodes: list[NodeType], where: str) -> dict[str, str]:
    """Group name -> problem, for requests that no single node of the cluster can hold."""
    usable = [n for n in nodes if n.max_count > 0]
    found: dict[str, tuple[Group, list[str]]] = {}
    for stage, groups in plan.items():
        for g in groups:
            if g.ask.bundle() and not any(_fits(n.resources, g.ask.bundle()) for n in usable):
                found.setdefault(g.name, (g, []))[1].append(stage)
    offered = "; ".join(f"{n.name}: {_fmt(n.resources)}" for n in usable)
    return {name: f"{g.name} ({g.key}) in stage(s) {', '.join(stages)} asks for {_fmt(g.ask.bundle())} per actor, "
                  f"but no node of {where} offers that (nodes: {offered})" for name, (g, stages) in found.items()}


def fit_problems(plan: dict[str, list[Group]], nodes: list[NodeType], where: str,
                 max_added: int | None = None) -> tuple[list[str], list[str]]:
    """(problems, one 'fits' line per stage that fits) for this cluster."""
    lonely = _unplaceable(plan, nodes, where)
    problems, lines = list(lonely.values()), []
    for stage, groups in plan.items():
        if any(g.name in lonely for g in groups):
            continue
        bundles = [g.ask.bundle() for g in groups for _ in range(g.count) if g.ask.bundle()]
        added, left = pack(nodes, bundles, max_added)
        if left:
            problems.append(f"{stage}: {len(left)} of {len(bundles)} requests do not fit {where} together "
                            f"(first left over: {_fmt(left[0])}); lower the pools or raise the node counts")
        else:
            grown = ", ".join(f"{k} x{v}" for k, v in sorted(added.items()) if v)
            lines.append(f"{stage}: fits {where}" + (f" (the autoscaler adds {grown})" if grown else ""))
    return problems, lines


# ------------------------------------------------------------------ cluster descriptions


def parse_ray_start_resources(raw: str | None) -> dict[str, float]:
    """KubeRay's rayStartParams.resources: a quoted JSON map, passed verbatim to `ray start`."""
    if not raw:
        return {}
    text = raw.strip()
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1].replace('\\"', '"')
    return {k: float(v) for k, v in json.loads(text).items()}


def _k8s_cpu(q) -> float:
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def _kuberay_group(group: dict, name: str, count: int, fixed: bool) -> NodeType:
    params = group.get("rayStartParams", {})
    limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    res = {"CPU": float(params["num-cpus"]) if "num-cpus" in params else _k8s_cpu(limits.get("cpu", 0)),
           "GPU": float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0))),
           **parse_ray_start_resources(params.get("resources"))}
    return NodeType(name, res, count, fixed)


def kuberay_nodes(spec: dict) -> list[NodeType]:
    """A RayCluster spec (or a RayJob's rayClusterSpec): the head, and each group up to maxReplicas."""
    nodes = [_kuberay_group(spec["headGroupSpec"], "head", 1, True)]
    nodes += [_kuberay_group(g, g["groupName"], int(g.get("maxReplicas", g.get("replicas", 0))), False)
              for g in spec.get("workerGroupSpecs", [])]
    return nodes


def launcher_nodes(cfg: dict) -> list[NodeType]:
    """A cluster-launcher YAML: the head type once, each worker type up to its max_workers."""
    out = []
    for name, t in cfg["available_node_types"].items():
        if "resources" not in t:
            raise PlanError(f"node type {name!r} has no `resources`; the plan needs them written out")
        head = name == cfg["head_node_type"]
        out.append(NodeType(name, {k: float(v) for k, v in t["resources"].items()},
                            1 if head else int(t.get("max_workers", 0)), head))
    return out


def load_cluster(path: str | Path) -> tuple[list[NodeType], int | None]:
    """Node types of a launcher YAML or a KubeRay RayCluster/RayJob manifest, and the launcher's max_workers."""
    p = Path(path)
    if not p.is_file():
        raise PlanError(f"--cluster: {p} does not exist (a cluster/*.yaml, a KubeRay manifest, or 'live')")
    for doc in (d for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict)):
        if "available_node_types" in doc:
            return launcher_nodes(doc), doc.get("max_workers")
        if doc.get("kind") == "RayCluster":
            return kuberay_nodes(doc["spec"]), None
        if doc.get("kind") == "RayJob":
            return kuberay_nodes(doc["spec"]["rayClusterSpec"]), None
    raise PlanError(f"--cluster: {p} is neither a cluster-launcher config nor a KubeRay RayCluster/RayJob")


def live_nodes() -> list[NodeType]:
    """The alive nodes of the Ray cluster this process is connected to, as they are now."""
    import ray

    out = []
    for n in ray.nodes():
        if n.get("Alive"):
            res = {k: float(v) for k, v in n["Resources"].items()
                   if not k.startswith("node:") and k not in ("memory", "object_store_memory")}
            out.append(NodeType(f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})", res))
    return out


def local_node(cfg: Config) -> NodeType:
    """This machine as a local Ray would see it: resources.num_cpus (or every core), its GPUs."""
    from ray._private.accelerators import get_accelerator_manager_for_resource

    gpus = get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators()
    return NodeType("this machine", {"CPU": float(cfg.resources.num_cpus or os.cpu_count() or 1), "GPU": float(gpus)})


# ------------------------------------------------------------------ the report


def render(cfg: Config, plan: dict[str, list[Group]]) -> str:
    head = f"{'component':<28}{'count':>6}{'CPUs':>7}{'GPUs':>6}  {'custom resources':<24}{'TP':>3}  memory"
    lines = [f"placement plan for {cfg.model.name} (run.stages: {', '.join(cfg.run.stages)})"]
    for stage, groups in plan.items():
        lines += ["", f"stage {stage}", "  " + head]
        for g in groups:
            custom = _fmt(g.ask.resources) if g.ask.resources else "-"
            tp = "-" if g.tp is None else str(g.tp)
            lines.append(f"  {g.name:<28}{g.count:>6}{g.ask.num_cpus:>7g}{g.ask.num_gpus:>6g}  {custom:<24}"
                         f"{tp:>3}  {g.memory}")
        total: dict[str, float] = {}
        for g in groups:
            for k, v in g.ask.bundle().items():
                total[k] = total.get(k, 0.0) + v * g.count
        lines.append(f"  total: {_fmt(total)}")
    return "\n".join(lines)


def check_plan(cfg: Config, cluster: str | None = None) -> tuple[str, list[str]]:
    """(the printed plan, every problem found). cluster: a YAML path, 'live', or None."""
    plan = stage_groups(cfg)
    problems = device_problems(cfg, plan)
    max_added, nodes, where = None, None, None
    if cluster == "live":
        nodes, where = live_nodes(), "the live cluster's nodes"
    elif cluster:
        nodes, max_added = load_cluster(cluster)
        where = str(cluster)
    elif not cfg.resources.ray_address:
        nodes, where = [local_node(cfg)], "this machine (local Ray)"
    text = render(cfg, plan)
    if nodes is None:
        return text + "\n\nno cluster described: add --cluster cluster/aws.yaml (or a KubeRay manifest, or " \
                      "'live') to check that it fits", problems
    more, fits = fit_problems(plan, nodes, where, max_added)
    return text + "\n\n" + "\n".join(fits), problems + more


def show_plan(cfg: Config, cluster: str | None = None) -> int:
    """Print the plan; raise PlanError listing the problems, if any."""
    text, problems = check_plan(cfg, cluster)
    print(text)
    if problems:
        raise PlanError("the placement plan cannot run:\n  " + "\n  ".join(problems))
    return 0


def connect_and_show(cfg: Config, cluster: str | None) -> int:
    """`--plan`: for 'live', join resources.ray_address (or 'auto') just to read its node list."""
    if cluster != "live":
        return show_plan(cfg, cluster)
    import ray

    address = cfg.resources.ray_address or "auto"
    try:
        ray.init(address=address, logging_level="ERROR")
    except ConnectionError as e:
        raise PlanError(f"--cluster live: no Ray cluster to read at resources.ray_address={address!r} ({e})") from None
    try:
        return show_plan(cfg, cluster)
    finally:
        ray.shutdown()
