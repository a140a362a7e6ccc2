"""What each actor kind asks Ray for, decided from the config alone.

Pure functions, so the run (pipelines/stages.py) and the placement plan
(pipelines/plan.py) read the same answer, and tests can check every case.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.config import PoolResources, ResourcesConfig


@dataclass(frozen=True)
class Ask:
    """One actor's (or one train worker's) Ray resource request."""

    num_cpus: float
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def device(self) -> str:
        """Where the actor's torch model belongs: Ray shows it only the GPUs it asked for."""
        return "cuda" if self.num_gpus > 0 else "cpu"

    def bundle(self) -> dict[str, float]:
        """The request as one Ray resource bundle, zeros left out."""
        out = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}
        return {k: float(v) for k, v in out.items() if v}

    def options(self) -> dict:
        """Keyword arguments for `ray.remote(...).options(...)`."""
        opts: dict = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.resources:
            opts["resources"] = dict(self.resources)
        return opts


def engine_ask(pool: PoolResources) -> Ask:
    """A vLLM sampler or judge actor: its pool's CPUs, GPUs (>= tensor-parallel size) and node marker."""
    return Ask(pool.num_cpus, pool.num_gpus, dict(pool.custom_resources))


def rule_critic_ask(pool: PoolResources) -> Ask:
    """A critic that only rule-checks (no judge engine): half a core, no GPU."""
    return Ask(0.5, 0.0, dict(pool.custom_resources))


def learner_ask(r: ResourcesConfig) -> Ask:
    """One Ray Train worker (one DeepSpeed rank)."""
    return Ask(r.learner_cpus, r.learner_gpus, dict(r.learner_resources))


def buffer_ask(r: ResourcesConfig) -> Ask:
    """The replay buffer: no CPU reservation (it mostly waits), pinned by its custom resource."""
    return Ask(0.0, 0.0, dict(r.buffer_resources))


def reference_scorer_ask(r: ResourcesConfig) -> Ask:
    """The DPO reference model runs on the learners' kind of device.

    With learner GPUs it takes one GPU (at most one: it only runs forward passes) on a
    learner node, asking for the learners' custom resources scaled to that GPU share, and
    one core to tokenize. Without, it shares the CPU as before (no core reserved: on a
    small machine it runs while the samplers wait on it).
    """
    if r.learner_gpus <= 0:
        return Ask(0.0)
    gpus = min(1.0, r.learner_gpus)
    share = gpus / r.learner_gpus
    return Ask(1.0, gpus, {k: v * share for k, v in r.learner_resources.items()})
