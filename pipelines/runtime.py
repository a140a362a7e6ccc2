"""What every stage shares: config, Ray connection, the two actor pools, tracking."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import ray

from actors.critic import CriticWorker
from actors.engine import SamplingSpec
from actors.pool import ActorPool
from actors.sampler import SamplerWorker
from core.config import Config, PoolResources
from core.data import load_problems
from core.records import Problem
from pipelines.preflight import check_local_resources
from pipelines.run_dir import RunDir
from pipelines.tracking import Tracker

log = logging.getLogger("selfcritique")

# Environment the actors and train workers need, forwarded from the driver to a cluster's job.
FORWARD_ENV = ("SELFCRITIQUE_CACHE", "DS_ACCELERATOR", "TORCH_EXTENSIONS_DIR", "HF_HUB_OFFLINE",
               "HF_DATASETS_CACHE", "VLLM_CPU_KVCACHE_SPACE", "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS",
               "VLLM_ENABLE_V1_MULTIPROCESSING")


# Ray Train helpers with nothing to do on a one-machine head: the preemption watcher (no node of
# a local head can be preempted) and Prometheus metrics (no dashboard reads them). The watcher is
# a process of its own at every learner start (bench/learner_start.py measures what turning
# both off saves; docs/design.md). A value the user set wins.
LOCAL_HEAD_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_METRICS_ENABLED": "0"}


def local_head_env(env: dict, environ=os.environ) -> dict:
    """env plus LOCAL_HEAD_ENV, which is also set in this process: the driver builds Ray Train's
    callbacks, and its controller actor inherits the head's environment (start_local_head)."""
    trims = {k: environ.get(k, v) for k, v in LOCAL_HEAD_ENV.items()}
    environ.update(trims)
    return env | trims


# Set by Ray in the driver of a job started with `ray job submit`.
SUBMITTED_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def init_ray(cfg: Config) -> None:
    if ray.is_initialized():
        return
    project_root = str(Path(__file__).resolve().parents[1])
    if cfg.resources.ray_address:
        env = {k: os.environ[k] for k in FORWARD_ENV if k in os.environ}
        if SUBMITTED_JOB_ENV in os.environ:
            # Under `ray job submit` the job's own runtime_env (working dir, env vars) applies;
            # passing a second one would conflict with it.
            ray.init(address=cfg.resources.ray_address)
        else:
            ray.init(address=cfg.resources.ray_address, runtime_env={"env_vars": env})
    else:
        # FORWARD_ENV is in this process's environment already, and the workers inherit it.
        env = {"PYTHONPATH": project_root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        # A local head binds to loopback only; the dashboard stays off unless asked for.
        start_local_head(local_head_env(env), num_cpus=cfg.resources.num_cpus, include_dashboard=False,
                         _node_ip_address="127.0.0.1")
        check_local_resources(cfg, ray.cluster_resources())


def start_local_head(env: dict, environ=os.environ, **init_kwargs) -> None:
    """A local Ray head whose workers get `env` by inheritance, not through a runtime_env.

    The raylet starts with this process's environment and passes it to every worker. A runtime_env,
    even one of environment variables only, makes Ray start each worker through its setup_worker.py
    first: one more Python start with Ray's imports for every actor and Ray Train worker
    (bench/learner_start.py measures it), and a local head has hundreds of them in the tests."""
    environ.update(env)
    start_local_ray(address="local", **init_kwargs)


def start_local_ray(attempts: int = 3, **init_kwargs) -> None:
    """`ray.init` of a local head, tried again when its raylet was too slow to register.

    Ray gives a new raylet 30 s (a constant in ray._private.node) to register with its GCS;
    on a 2-core machine busy with other processes that can pass, and the start then fails
    although nothing is wrong."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(**init_kwargs)
            return
        except Exception as e:
            if "timed out during startup" not in str(e) or attempt == attempts:
                raise
            log.warning("the local Ray head was slow to start (attempt %d of %d): starting it again",
                        attempt, attempts)
            ray.shutdown()


def engine_kwargs(cfg: Config, pool: PoolResources) -> dict:
    return dict(dtype=cfg.model.dtype, max_model_len=cfg.model.max_model_len,
                tensor_parallel_size=pool.tensor_parallel_size, seed=cfg.run.seed,
                kv_cache_gib=pool.kv_cache_gib, gpu=pool.num_gpus > 0, cpu_threads_bind=pool.cpu_threads_bind,
                max_num_seqs=pool.max_num_seqs)


@dataclass
class Runtime:
    cfg: Config
    run: RunDir
    tracker: Tracker
    model_path: str
    round_no: int = 1  # the self-critique round now running (run.rounds)
    _samplers: ActorPool | None = None
    _critics: ActorPool | None = None
    _critic_policy: str = ""
    _critics_judge: bool = False  # whether the critic pool's actors hold a judge engine
    problems_cache: dict = field(default_factory=dict)

    # ------------------------------------------------------------ pools (lazy, reused)

    def samplers(self) -> ActorPool:
        if self._samplers is None:
            r = self.cfg.resources.samplers
            self._samplers = ActorPool(
                SamplerWorker, r.num_actors, (self.model_path, "base", engine_kwargs(self.cfg, r),
                                              self.cfg.model.system_prompt),
                num_cpus=r.num_cpus, num_gpus=r.num_gpus, resources=r.custom_resources, name="samplers")
            self._samplers.wait_ready()
        return self._samplers

    def critics(self, policy: str) -> ActorPool:
        """Critic pool; the judge engine starts only when a policy first needs it, and stays
        (a judge pool grades by the rule alone too), so switching policies restarts nothing."""
        needs_judge = policy != "rule"
        if self._critics is not None and needs_judge and not self._critics_judge:
            self._critics.shutdown()
            self._critics = None
        if self._critics is None:
            r, c = self.cfg.resources.critics, self.cfg.critic
            self._critics = ActorPool(
                CriticWorker, r.num_actors,
                (policy, self.model_path if needs_judge else None, "base", engine_kwargs(self.cfg, r),
                 c.max_new_tokens, c.keep_threshold, c.answer_timeout_s, c.judge_rule_failures,
                 c.calculator_notes),
                num_cpus=r.num_cpus if needs_judge else 0.5, num_gpus=r.num_gpus if needs_judge else 0,
                resources=r.custom_resources, name="critics")
            self._critics.wait_ready()
            self._critic_policy, self._critics_judge = policy, needs_judge
        elif policy != self._critic_policy:
            self._critics.call_all("set_policy", policy)
            self._critic_policy = policy
        return self._critics

    def shutdown(self) -> None:
        for pool in (self._samplers, self._critics):
            if pool is not None:
                pool.shutdown()
        self._samplers = self._critics = None

    # ------------------------------------------------------------ data

    def problems(self, split: str) -> list[Problem]:
        if split not in self.problems_cache:
            spec = self.cfg.data.train if split == "train" else self.cfg.data.test
            probs, report = load_problems(spec, self.cfg.data.on_bad_row)
            log.info(report.summary())
            if report.skipped:
                self.tracker.log({f"data/{split}_skipped": len(report.skipped)})
                (self.run.root / f"skipped-{split}.txt").write_text("\n".join(report.skipped) + "\n")
            self.problems_cache[split] = probs
        return self.problems_cache[split]

    def sampling(self, n: int | None = None, greedy: bool = False, max_new_tokens: int | None = None) -> SamplingSpec:
        s = self.cfg.sampling
        return SamplingSpec(n=1 if greedy else (n or s.n), temperature=0.0 if greedy else s.temperature,
                            top_p=1.0 if greedy else s.top_p, max_new_tokens=max_new_tokens or s.max_new_tokens)
