"""Checks before any actor starts, so an impossible request fails in seconds with its key.

On a local Ray the machine is all there is: a pool that asks for more CPUs or GPUs
than exist would wait forever. On a cluster (resources.ray_address set) the
autoscaler may add nodes, so only requests no node type can satisfy are reported by
Ray itself; we check the single-machine case.
"""

from __future__ import annotations

from core.config import Config, ConfigError
from core.data import check_source

# Ray accounts resources in units of 1e-4; sums of fractions (0.1 + 0.2) must not
# read as more than the machine has because of float rounding.
_EPS = 1e-6


def required_resources(cfg: Config) -> list[tuple[str, dict[str, float]]]:
    r = cfg.resources
    out = []
    for name in ("samplers", "critics"):
        pool = getattr(r, name)
        one = {"CPU": pool.num_cpus, "GPU": pool.num_gpus, **pool.custom_resources}
        out += [(f"resources.{name}[{i}]", one) for i in range(pool.num_actors)]
    learner = {"CPU": r.learner_cpus, "GPU": r.learner_gpus, **r.learner_resources}
    out += [(f"resources.learner_workers[{i}]", learner) for i in range(r.learner_workers)]
    if r.buffer_resources:  # the buffer actor takes no CPU, but a custom resource must exist
        out.append(("resources.buffer_resources", dict(r.buffer_resources)))
    return out


def _pools(whos: list[tuple[str, float]]) -> str:
    """[("resources.samplers[0]", 1), ("resources.samplers[1]", 1)] -> "resources.samplers[0..1] (2 x 1)"."""
    groups: dict[str, list[float]] = {}
    for who, amount in whos:
        groups.setdefault(who.split("[", 1)[0], []).append(amount)
    parts = []
    for pool, amounts in groups.items():
        if len(amounts) == 1:
            idx = "[0]" if pool != "resources.buffer_resources" else ""
            parts.append(f"{pool}{idx} ({amounts[0]:g})")
        else:
            parts.append(f"{pool}[0..{len(amounts) - 1}] ({len(amounts)} x {amounts[0]:g})")
    return " + ".join(parts)


def check_local_resources(cfg: Config, available: dict[str, float]) -> None:
    """Every single request must fit, and a stage's concurrent pools must fit together."""
    problems = []
    requests = required_resources(cfg)
    for who, req in requests:
        for res, amount in req.items():
            if amount and amount > available.get(res, 0) + _EPS:
                problems.append(f"{who} asks for {res}={amount:g} but this machine has {available.get(res, 0):g}")
    if not problems:
        by_res: dict[str, list[tuple[str, float]]] = {}
        for who, req in requests:
            for res, amount in req.items():
                if amount:
                    by_res.setdefault(res, []).append((who, amount))
        for res, whos in by_res.items():
            amount = sum(a for _, a in whos)
            if amount > available.get(res, 0) + _EPS:
                hint = "raise resources.num_cpus, or lower the pools" if res == "CPU" else "lower the pools"
                problems.append(f"{_pools(whos)} together ask for {res}={amount:g} but this machine has "
                                f"{available.get(res, 0):g} ({hint})")
    if problems:
        raise ConfigError("impossible resources on this local Ray:\n  " + "\n  ".join(problems))


def check_data_sources(cfg: Config) -> None:
    """Every dataset the run will read must exist before hours of training, not at eval."""
    stages = set(cfg.run.stages)
    sources = [("data.train.path", cfg.data.train), ("data.test.path", cfg.data.test)]
    for key, spec in sources:
        if spec.kind != "generated":
            check_source(spec.path, key)
    if "critic" in stages and cfg.critic.records_path:
        check_source(cfg.critic.records_path, "critic.records_path")
    if "eval" in stages and cfg.eval.mathusereval_path:
        check_source(cfg.eval.mathusereval_path, "eval.mathusereval_path")
