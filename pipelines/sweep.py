"""Entrypoint: `python -m pipelines.sweep --config configs/cpu-demo.yaml --grid dpo.beta=[0.5,1,2]
dpo.nll_coef=[0.5,1,1.5] [key=value ...] [--publish docs/results/sweep.json]`.

The paper's DPO β × λ search as one Ray Tune job. What every trial shares is made once:
the critic and RFT stages (through pipelines.self_critique.run, which reuses what the run
directory already finished) and one set of DPO pairs, sampled from the RFT model, graded,
paired, and given their reference log-probs, in <run_dir>/sweep/pairs/. Those pairs go into
the object store once and every trial gets the same refs. A trial is a fresh buffer holding
them, a Ray Train DPO learner with its (β, λ), and a greedy eval of its checkpoint on the same
held-out problems, run inside the trial by the driver's sampler pool. Rerunning the command
reuses the pairs (nothing is sampled or scored again) and skips the points that finished.
No early-stopping scheduler (ASHA): a trial reports one held-out figure, after its eval, so
there is nothing earlier to stop it on.

Outputs in <run_dir>/sweep/: sweep.json, sweep.md, heatmap.png, points.jsonl (one row per
trial outcome), trials/<name>/ (each trial's buffer, learner, eval) and W&B runs in one group.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

from actors.journal import Journal
from core.config import Config, ConfigError, load_config, parse_override
from core.data import DataError
from core.models import ModelError
from pipelines.run_dir import RunDir, StageError
from pipelines.tracking import Tracker, redact

log = logging.getLogger("selfcritique")

SWEPT = ("dpo.beta", "dpo.nll_coef")
# A trial's own process only waits on its learner and the shared pools. Tune refuses a
# request of zero, so it asks for a sliver of a core.
TRIAL_CPUS = 0.01
STATUSES = ("ok", "error")


class SweepError(ValueError):
    """sweep.json does not have the published schema; the message lists what is wrong."""


# ------------------------------------------------------------------ grid (pure)


def split_grid(items: list[str]) -> tuple[dict[str, list], list[str]]:
    """({swept key: values}, other overrides) from the --grid arguments.

    The swept keys are parsed with the config's own override parser; a scalar is a
    one-value axis. Anything else after --grid is an ordinary override."""
    grid: dict[str, list] = {}
    rest: list[str] = []
    for text in items:
        key, value = parse_override(text)
        if key not in SWEPT:
            rest.append(text)
            continue
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice")
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ConfigError(f"--grid {key}: expected a non-empty list such as {key}=[0.5,1,2], got []")
        grid[key] = values
    return grid, rest


def grid_points(config_path: str | None, overrides: list[str], grid: dict[str, list]) -> list[dict]:
    """Every (β, λ) of the grid, each validated as a whole config (a bad value names its key)."""
    base = load_config(config_path, overrides)
    betas = grid.get("dpo.beta", [base.dpo.beta])
    nlls = grid.get("dpo.nll_coef", [base.dpo.nll_coef])
    points = []
    for b in betas:
        for lam in nlls:
            pinned = [f"dpo.beta={json.dumps(b)}", f"dpo.nll_coef={json.dumps(lam)}"]
            try:
                cfg = load_config(config_path, overrides + pinned)
            except ConfigError as e:
                raise ConfigError(f"--grid point dpo.beta={b!r} dpo.nll_coef={lam!r}: {e}") from None
            points.append(point(cfg.dpo.beta, cfg.dpo.nll_coef))
    names = [p["name"] for p in points]
    if len(set(names)) != len(names):
        raise ConfigError(f"--grid: repeated points {sorted({n for n in names if names.count(n) > 1})}")
    return points


def point(beta: float, nll_coef: float) -> dict:
    return {"name": trial_name(beta, nll_coef), "beta": beta, "nll_coef": nll_coef}


def trial_name(beta: float, nll_coef: float) -> str:
    """The trial's directory and Tune name: `beta0.5-nll1`."""
    return f"beta{beta:g}-nll{nll_coef:g}"


def latest_outcomes(rows: list[dict], points: list[dict]) -> list[dict]:
    """Each grid point with its latest recorded outcome (status "not run" when none)."""
    last = {r["name"]: r for r in rows}
    return [{**p, "accuracy": None, "status": "not run"} | last.get(p["name"], {}) for p in points]


def parallel_trials(free: dict[str, float], per_trial: dict[str, float], cores_free: float | None,
                    threads_per_trial: float) -> int:
    """How many trials fit at once: every resource a trial asks for must fit in what the
    pools left free, and on one machine (cores_free given) its learner's threads must fit
    in the cores the engines left. At least one: a sweep always makes progress."""
    fits = [math.floor(free.get(k, 0.0) / v + 1e-9) for k, v in per_trial.items() if v > 0]
    if cores_free is not None and threads_per_trial > 0:
        fits.append(math.floor(cores_free / threads_per_trial + 1e-9))
    return max(1, min(fits, default=1))


def error_summary(err: BaseException | str) -> str:
    """One line for the table: the last line of the error that names what went wrong."""
    lines = [x.strip() for x in str(err).splitlines() if x.strip()]
    return (lines[-1] if lines else type(err).__name__)[:400]


# ------------------------------------------------------------------ shared parts (driver)


def prerequisites(cfg: Config, command: str, config_path: str) -> list[str]:
    """Run whatever of the critic and RFT stages the run directory has not finished yet
    (the critic only when the config's stages include it); returns the stages."""
    from pipelines.runtime import init_ray
    from pipelines.self_critique import run as run_pipeline

    stages = [s for s in ("critic", "rft") if s in cfg.run.stages or s == "rft"]
    if all(RunDir(cfg.run.run_dir).done(s) for s in stages):
        init_ray(cfg)  # nothing to run: the run's own settings and provenance stay as they are
        return stages
    # round 1 only: the sweep trains from round 1's RFT model, and a later round's stages
    # started without its eval would begin from the wrong model
    run_pipeline(cfg.model_copy(update={"run": cfg.run.model_copy(update={"stages": stages, "rounds": 1})}),
                 command, config_path)
    return stages


def shared_models(rt, stages: list[str]) -> tuple[str, tuple | None, str]:
    """(RFT checkpoint, judge checkpoint or None, grading policy) from the run's manifest."""
    from pipelines.stages import critic_gate

    judge, policy = None, "rule"
    critic = rt.run.done("critic") if "critic" in stages else None
    if critic:
        judge = (critic["checkpoint"], "critic") if critic["checkpoint"] else None
        policy = critic_gate(rt, critic["metrics"])
    return rt.run.done("rft")["checkpoint"], judge, policy


def build_pairs(rt, rft_ckpt: str, judge, policy: str, directory: Path) -> None:
    """Sample, grade and pair the DPO problems once; the buffer journals each pair with its
    reference log-probs, and a rerun samples only what its lineage lacks."""
    import ray

    from pipelines.stages import dpo_pair_buffer, dpo_problems
    from pipelines.stream_learn import remaining_problems, rollout_with_progress

    n = rt.cfg.dpo.samples_per_prompt
    buffer, scorer = dpo_pair_buffer(rt, rft_ckpt, directory)
    try:
        todo = remaining_problems(dpo_problems(rt), directory / "lineage.jsonl", n)
        if todo:
            rollout_with_progress(rt, "sweep-pairs", todo, buffer, rt.sampling(n=n), critic_policy=policy,
                                  policy_ckpt=(rft_ckpt, "rft"), judge_ckpt=judge)
        else:
            ray.get(buffer.close.remote())  # emits any group a crash left undecided
    finally:
        ray.kill(scorer)
        ray.kill(buffer)


def read_pairs(directory: Path) -> tuple[list, dict]:
    """The pairs the buffer delivered, with how often each stage of their making ran: every
    deliverable row is one pair scored by the reference model, so rows > pairs means a
    pair was built twice."""
    from actors.buffer import decode_item, item_key

    rows = Journal.read(directory / "deliverables.jsonl")
    pairs = {}
    for r in rows:
        item = decode_item(r["item"])
        pairs.setdefault(item_key(item), item)
    counts = {"pairs": len(pairs), "pairs_built": len(rows),
              "pair_samples": len(Journal.read(directory / "lineage.jsonl"))}
    return list(pairs.values()), counts


def trial_capacity(cfg: Config) -> int:
    """Trials at once on this cluster, from what the pools left free (call once they run)."""
    import ray

    from pipelines.placement import learner_ask

    r = cfg.resources
    per_trial = {k: v * r.learner_workers for k, v in learner_ask(r).bundle().items()}
    per_trial["CPU"] = per_trial.get("CPU", 0.0) + TRIAL_CPUS
    free = ray.available_resources()
    cores_free = None
    if not r.ray_address:  # a local head: Ray's CPU count may exceed the machine's cores
        used = ray.cluster_resources().get("CPU", 0.0) - free.get("CPU", 0.0)
        cores_free = (os.cpu_count() or 1) - used
    threads = r.learner_workers * (r.learner_threads or r.learner_cpus)
    return parallel_trials(free, per_trial, cores_free, threads)


# ------------------------------------------------------------------ trials (inside Ray Tune)


def sweep_trial(config: dict, shared: dict) -> None:
    """One (β, λ): a fresh buffer holding the shared pairs, a DPO learner, a greedy eval.

    Runs in a Tune trial's process. The learner is a Ray Train run started from here (Train
    V2 runs its controller on this trial's node); the eval borrows the driver's sampler and
    rule-critic actors through pool views, and a sampler switches to this trial's weights
    under a version label unique to the trial."""
    from ray import tune

    p, t0 = config["point"], time.time()
    cfg = Config.model_validate(shared["config"])
    cfg.dpo.beta, cfg.dpo.nll_coef = p["beta"], p["nll_coef"]
    d = Path(shared["trials_dir"]) / p["name"]
    d.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(d, cfg.model_dump(), cfg.logging.wandb, cfg.logging.project,
                      f"{shared['group']}/{p['name']}", group=shared["group"])
    try:
        rt = trial_runtime(cfg, d, tracker, shared)
        ckpt, steps = train_point(rt, shared, p)
        from pipelines.stages import greedy_accuracy

        ev = greedy_accuracy(rt, "dpo", (ckpt, f"sweep-{p['name']}"), shared["problems"])
        result = {"accuracy": ev["accuracy"], "n_eval": ev["n"], "truncated": ev["truncated"],
                  "train_steps": steps, "checkpoint": ckpt, "minutes": round((time.time() - t0) / 60, 2)}
        tracker.log({f"sweep/{k}": v for k, v in result.items() if k != "checkpoint"})
        tune.report(result)
    finally:
        tracker.finish()


def trial_runtime(cfg: Config, d: Path, tracker: Tracker, shared: dict):
    """A Runtime rooted at the trial's directory whose pools are views of the driver's actors.
    Never shut it down: the actors belong to the driver."""
    from actors.pool import ActorPool
    from pipelines.runtime import Runtime

    return Runtime(cfg, RunDir(d), tracker, shared["rft_checkpoint"],
                   _samplers=ActorPool.over(shared["samplers"], "samplers"),
                   _critics=ActorPool.over(shared["critics"], "critics"), _critic_policy="rule")


def train_point(rt, shared: dict, p: dict) -> tuple[str, int]:
    """Fill a fresh buffer with the shared pairs and train DPO on them; (checkpoint, steps).
    A rerun of a failed trial resumes: the buffer dedupes the pairs by key, the learner
    restores its last checkpoint."""
    import ray

    from learners.trainer import run_learner
    from pipelines.stages import dpo_job
    from pipelines.stream_learn import make_buffer

    buffer = make_buffer(rt, rt.run.root / "pairs", None)
    try:
        ray.get(buffer.put_items.remote(shared["pairs"]))
        ray.get(buffer.close.remote())
        job = dpo_job(rt, "dpo", shared["rft_checkpoint"], buffer, p["beta"], p["nll_coef"])
        summary = run_learner(job)
    finally:
        ray.kill(buffer)
    rows = Journal.read(job.metrics_path)
    for row in rows:
        rt.tracker.log({f"dpo/train/{k}": v for k, v in row.items() if k != "stage"})
    return job.out_dir, summary["micro"]


def run_trials(cfg: Config, todo: list[dict], shared: dict, sweep_dir: Path, parallel: int) -> list[dict]:
    """All remaining points as one Tune job; each trial's outcome as a points.jsonl row.
    A failed trial is a row with its error, not the end of the sweep."""
    from ray import tune

    trainable = tune.with_resources(tune.with_parameters(sweep_trial, shared=shared),
                                    tune.PlacementGroupFactory([{"CPU": TRIAL_CPUS}]))
    attempt = len(list((sweep_dir / "tune").glob("attempt-*"))) + 1
    tuner = tune.Tuner(
        trainable, param_space={"point": tune.grid_search(todo)},
        tune_config=tune.TuneConfig(max_concurrent_trials=parallel, trial_name_creator=_trial_label,
                                    trial_dirname_creator=_trial_label),
        run_config=tune.RunConfig(name=f"attempt-{attempt}", storage_path=str(sweep_dir / "tune"),
                                  failure_config=tune.FailureConfig(max_failures=0), verbose=1))
    rows = [outcome_row(r.config["point"], r.metrics, r.error) for r in tuner.fit()]
    Journal(sweep_dir / "points.jsonl").write(rows)
    return rows


def _trial_label(trial) -> str:
    return trial.config["point"]["name"]


def outcome_row(p: dict, metrics: dict | None, error) -> dict:
    keep = ("accuracy", "n_eval", "truncated", "train_steps", "checkpoint", "minutes")
    row = {**p, "status": "error" if error else "ok", "time": time.time()}
    row |= {k: (metrics or {}).get(k) for k in keep}
    if error:
        row["accuracy"], row["error"] = None, error_summary(error)
    return row


# ------------------------------------------------------------------ the sweep (driver)


def run(cfg: Config, points: list[dict], grid: dict, command: str = "", config_path: str = "") -> dict:
    """Run the points that have no successful outcome yet, then write the sweep's outputs."""
    from core.hardware import machine_info
    from pipelines.results import config_sha256, git_commit

    t0 = time.time()
    sweep_dir = RunDir(cfg.run.run_dir).root / "sweep"
    sweep_dir.mkdir(parents=True, exist_ok=True)
    done = {r["name"] for r in Journal.read(sweep_dir / "points.jsonl") if r["status"] == "ok"}
    todo = [p for p in points if p["name"] not in done]
    extra = run_remaining(cfg, todo, sweep_dir, command, config_path) if todo else {"parallel_trials": None}
    _, counts = read_pairs(sweep_dir / "pairs")
    res = {"points": latest_outcomes(Journal.read(sweep_dir / "points.jsonl"), points), **counts,
           "grid": {k: grid.get(k, [getattr(cfg.dpo, k.split(".")[1])]) for k in SWEPT},
           "eval_problems": cfg.eval.problems, "dpo_problems": cfg.dpo.problems,
           "samples_per_prompt": cfg.dpo.samples_per_prompt, **extra, "scheduler": None,
           "command": redact(command), "config": config_path, "machine": machine_info(), "commit": git_commit(),
           "config_sha256": config_sha256(cfg.model_dump()), "minutes": round((time.time() - t0) / 60, 2)}
    write_outputs(sweep_dir, res)
    log_sweep(cfg, sweep_dir, res)
    return res


def run_remaining(cfg: Config, todo: list[dict], sweep_dir: Path, command: str, config_path: str) -> dict:
    """Shared parts once (prerequisites, pairs), then the trials of `todo` as one Tune job."""
    import ray

    from core.models import resolve_model
    from pipelines.runtime import Runtime

    stages = prerequisites(cfg, command, config_path)  # also starts Ray
    tracker = Tracker(sweep_dir, cfg.model_dump(), False, "", "")  # metrics.jsonl; W&B is per trial
    rt = Runtime(cfg, RunDir(cfg.run.run_dir), tracker, resolve_model(cfg.model.name))
    try:
        rft_ckpt, judge, policy = shared_models(rt, stages)
        build_pairs(rt, rft_ckpt, judge, policy, sweep_dir / "pairs")
        pairs, counts = read_pairs(sweep_dir / "pairs")
        if not pairs:
            raise StageError(f"{sweep_dir / 'pairs'}: no DPO pairs from {counts['pair_samples']} samples "
                             "(no problem had responses far enough apart in score); nothing to sweep")
        shared = {"pairs": [ray.put(x) for x in pairs], "config": cfg.model_dump(), "rft_checkpoint": rft_ckpt,
                  "samplers": rt.samplers().actors, "critics": rt.critics("rule").actors,
                  "problems": rt.problems("test")[: cfg.eval.problems], "trials_dir": str(sweep_dir / "trials"),
                  "group": sweep_group(cfg)}
        parallel = trial_capacity(cfg)
        log.info("sweep: %d pairs shared by %d trials, %d at a time", len(pairs), len(todo), parallel)
        run_trials(cfg, todo, shared, sweep_dir, parallel)
        return {"parallel_trials": parallel, "rft_checkpoint": rft_ckpt, "judge": judge and judge[0],
                "grading_policy": policy}
    finally:
        rt.shutdown()


def sweep_group(cfg: Config) -> str:
    """The W&B group every run of one sweep joins (its trials and its summary)."""
    return f"{cfg.logging.run_name or Path(cfg.run.run_dir).name}-sweep"


# ------------------------------------------------------------------ outputs


def write_outputs(sweep_dir: Path, res: dict) -> None:
    (sweep_dir / "sweep.json").write_text(json.dumps(res, indent=2) + "\n")
    plot_heatmap(res["points"], sweep_dir / "heatmap.png")
    (sweep_dir / "sweep.md").write_text(render_markdown(res))


def render_markdown(res: dict) -> str:
    from pipelines.report import machine_line

    lines = ["# DPO β × λ sweep", "", f"Machine: {machine_line(res.get('machine'))}", "",
             f"Commit: {res.get('commit')}", "",
             f"Pairs: {res['pairs']} from {res['pair_samples']} samples of {res['dpo_problems']} problems, "
             f"shared by every trial; reference log-probs computed {res['pairs_built']} times in all.", "",
             f"Held-out greedy accuracy on {res['eval_problems']} test problems.", "",
             "| β | λ | accuracy | n | train steps | status |", "| --- | --- | --- | --- | --- | --- |"]
    for p in res["points"]:
        acc = "" if p.get("accuracy") is None else f"{p['accuracy'] * 100:.1f}%"
        status = p["status"] + (f": {p['error']}" if p.get("error") else "")
        lines.append(f"| {p['beta']:g} | {p['nll_coef']:g} | {acc} | {p.get('n_eval') or ''} | "
                     f"{p.get('train_steps') or ''} | {status.replace('|', '/')} |")
    return "\n".join(lines + ["", "![accuracy over β × λ](heatmap.png)", ""])


def plot_heatmap(points: list[dict], path: Path) -> None:
    """Accuracy over β (columns) × λ (rows); points without an accuracy stay blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    betas = sorted({p["beta"] for p in points})
    nlls = sorted({p["nll_coef"] for p in points})
    acc = np.full((len(nlls), len(betas)), np.nan)
    status = {}
    for p in points:
        at = nlls.index(p["nll_coef"]), betas.index(p["beta"])
        status[at] = "failed" if p["status"] == "error" else p["status"]
        if p.get("accuracy") is not None:
            acc[at] = p["accuracy"] * 100
    fig, ax = plt.subplots(figsize=(1.4 * len(betas) + 2.5, 1.1 * len(nlls) + 1.8))
    im = ax.imshow(np.ma.masked_invalid(acc), cmap="viridis", origin="lower")  # colours span the values seen
    for (i, j), v in np.ndenumerate(acc):
        ax.text(j, i, status.get((i, j), "") if np.isnan(v) else f"{v:.1f}", ha="center", va="center",
                color="black" if np.isnan(v) else "white", bbox=None if np.isnan(v) else {"fc": "#0006", "lw": 0})
    ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas])
    ax.set_yticks(range(len(nlls)), [f"{x:g}" for x in nlls])
    ax.set_xlabel("β (dpo.beta)")
    ax.set_ylabel("λ (dpo.nll_coef)")
    ax.set_title("Held-out greedy accuracy (%)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def log_sweep(cfg: Config, sweep_dir: Path, res: dict) -> None:
    """The table and the heatmap as one W&B run in the sweep's group."""
    if not cfg.logging.wandb:
        return
    import wandb

    tracker = Tracker(sweep_dir / "summary", {"grid": res["grid"], **cfg.model_dump()}, True, cfg.logging.project,
                      f"{sweep_group(cfg)}/summary", group=sweep_group(cfg))
    try:
        cols = ["beta", "nll_coef", "accuracy", "status"]
        tracker.table("sweep/points", cols, [[p.get(c) for c in cols] for p in res["points"]])
        tracker.run.log({"sweep/heatmap": wandb.Image(str(sweep_dir / "heatmap.png"))})
        tracker.summary({"pairs": res["pairs"], "pairs_built": res["pairs_built"]})
    finally:
        tracker.finish()


def check_sweep(res: dict) -> list[str]:
    """What keeps a sweep.json from being published; empty when it can be."""
    from pipelines.results import MACHINE_KEYS

    errs = []
    points = res.get("points")
    if not isinstance(points, list) or not points:
        return ["points: expected a non-empty list"]
    for i, p in enumerate(points):
        if not all(isinstance(p.get(k), (int, float)) for k in ("beta", "nll_coef")):
            errs.append(f"points[{i}]: beta and nll_coef must be numbers, got {p.get('beta')!r}, {p.get('nll_coef')!r}")
        if p.get("status") not in STATUSES:
            errs.append(f"points[{i}].status: expected one of {STATUSES}, got {p.get('status')!r}")
        acc = p.get("accuracy")
        if (p.get("status") == "ok") != (isinstance(acc, (int, float)) and 0 <= acc <= 1):
            errs.append(f"points[{i}].accuracy: a share in [0, 1] exactly when status is ok, got {acc!r}")
    if not isinstance(res.get("pairs"), int) or res["pairs"] <= 0 or not isinstance(res.get("pairs_built"), int):
        errs.append(f"pairs, pairs_built: expected counts, got {res.get('pairs')!r}, {res.get('pairs_built')!r}")
    m = res.get("machine")
    if not isinstance(m, dict) or any(k not in m for k in MACHINE_KEYS):
        errs.append(f"machine: expected an object with {', '.join(MACHINE_KEYS)}, got {m!r}")
    for k in ("commit", "config_sha256"):
        if not isinstance(res.get(k), str) or not res[k]:
            errs.append(f"{k}: expected a non-empty string, got {res.get(k)!r}")
    return errs


def publish(sweep_dir: Path, dest: Path) -> None:
    """Copy sweep.json byte for byte (and its heatmap next to it) once its schema checks out."""
    src = sweep_dir / "sweep.json"
    errs = check_sweep(json.loads(src.read_text()))
    if errs:
        raise SweepError(f"{src}: " + "; ".join(errs))
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    shutil.copyfile(sweep_dir / "heatmap.png", dest.with_suffix(".png"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.sweep", description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="YAML profile, e.g. configs/cpu-demo.yaml")
    ap.add_argument("--grid", nargs="+", default=[], metavar="KEY=[V,...]",
                    help=f"the swept keys ({', '.join(SWEPT)}) with their values; other key=value are overrides")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, e.g. run.run_dir=runs/x")
    ap.add_argument("--publish", type=Path, help="copy the checked sweep.json here (e.g. docs/results/sweep.json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        grid, more = split_grid(args.grid)
        overrides = args.overrides + more
        points = grid_points(args.config, overrides, grid)
        cfg = load_config(args.config, overrides)
        command = " ".join(["python -m pipelines.sweep"] + (argv if argv is not None else sys.argv[1:]))
        res = run(cfg, points, grid, command, args.config or "")
        if args.publish:
            publish(RunDir(cfg.run.run_dir).root / "sweep", args.publish)
    except (ConfigError, DataError, ModelError, StageError, SweepError) as e:
        print(f"error: {redact(str(e))}", file=sys.stderr)
        return 2
    print(json.dumps({k: res[k] for k in ("points", "pairs", "pairs_built", "minutes")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
