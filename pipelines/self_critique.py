"""Entrypoint: `python -m pipelines.self_critique --config configs/cpu-demo.yaml [key=value ...]`.

Runs critic -> rft -> dpo -> eval on a local Ray (loopback) or, with
resources.ray_address=auto (as under `ray job submit`), on the cluster. Rerunning
the same command resumes: finished stages are skipped, the interrupted one picks up
from its buffer lineage and learner checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from core.config import ConfigError, load_config
from core.data import DataError
from core.models import ModelError, resolve_model
from core.rounds import RoundError, critic_start, final_model, in_mix, problem_slices, round_dir
from pipelines.preflight import check_data_sources
from pipelines.results import provenance, write_summary
from pipelines.run_dir import RunDir
from pipelines.runtime import Runtime, init_ray
from pipelines.rounds import write_rounds
from pipelines.stages import (critic_gate, critique_records_of, run_critic_stage, run_dpo_stage, run_eval_stage,
                              run_rft_stage, weights_version)
from pipelines.stream_learn import StageError
from pipelines.tracking import Tracker, redact

log = logging.getLogger("selfcritique")


def run(cfg, command: str = "", config_path: str = "") -> dict:
    t0 = time.time()
    root = RunDir(cfg.run.run_dir)
    record_settings(root, cfg, command, config_path)
    check_data_sources(cfg)
    init_ray(cfg)
    tracker = Tracker(root.root, cfg.model_dump(), cfg.logging.wandb, cfg.logging.project, cfg.logging.run_name)
    rt = Runtime(cfg, root, tracker, resolve_model(cfg.model.name))
    try:
        check_round_layout(rt)
        start, critic = (rt.model_path, "base"), None
        for r in range(1, cfg.run.rounds + 1):
            enter_round(rt, r, root, command, config_path)
            start, critic = run_round(rt, root, start, critic)
            if r > 1:
                write_summary(rt.run)  # round 1's is the run's own, written below
        enter_round(rt, 1, root, command, config_path)
        root.set("last_run_minutes", (time.time() - t0) / 60)
        summary = write_summary(root)
        numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
        if cfg.run.rounds > 1 and "eval" in cfg.run.stages:
            summary["rounds"] = write_rounds(root)["rounds"]
            numbers |= {f"round{x['round']}/accuracy": x["accuracy"] for x in summary["rounds"]}
        tracker.summary(numbers)
        return {**summary, "report": str(root.root / "report.md"), "run_dir": str(root.root)}
    finally:
        rt.shutdown()
        tracker.finish()


def record_settings(run_dir: RunDir, cfg, command: str, config_path: str) -> None:
    (run_dir.root / "config.json").write_text(json.dumps(cfg.model_dump(), indent=2))
    run_dir.set("provenance", provenance(cfg.model_dump(), redact(command), config_path))


def check_round_layout(rt: Runtime) -> None:
    """Fail before any work when the last round would run out of training problems."""
    c = rt.cfg
    try:
        problem_slices(len(rt.problems("train")), c.rft.problems, c.dpo.problems, c.run.rounds, c.run.round_problems)
    except RoundError as e:
        raise StageError(str(e)) from None


def enter_round(rt: Runtime, r: int, root: RunDir, command: str, config_path: str) -> None:
    """Point the stages at round r's directory and W&B keys (round 1: the run's top level)."""
    rt.round_no = r
    rt.tracker.prefix = "" if r == 1 else f"round{r}/"
    if r == 1:
        rt.run = root
        return
    rt.run = RunDir(round_dir(root.root, r))
    if not rt.run.manifest.get("provenance"):
        record_settings(rt.run, rt.cfg, command, config_path)


def once(rt: Runtime, stage: str, work) -> dict:
    """Run a stage unless this round's manifest says it finished; returns its manifest entry."""
    done = rt.run.done(stage)
    if done:
        log.info("%s%s: finished earlier, reusing it", rt.tracker.prefix, stage)
        return done
    rt.run.mark_started(stage)
    ckpt, metrics = work()
    rt.run.mark_done(stage, ckpt, metrics)
    return rt.run.done(stage)


def record_round(rt: Runtime, start: tuple[str, str]) -> None:
    """What the round starts from, in its manifest; a rerun must start from the same."""
    now = {"number": rt.round_no, "starts_from": start[0], "critic_mode": rt.cfg.run.round_critic}
    before = rt.run.manifest.get("round")
    if before and (before["starts_from"], before["critic_mode"]) != (now["starts_from"], now["critic_mode"]):
        raise StageError(f"{rt.run.manifest_path}: round {rt.round_no} began from {before['starts_from']} "
                         f"(run.round_critic={before['critic_mode']}); this run would resume it from "
                         f"{now['starts_from']} (run.round_critic={now['critic_mode']}). Use a new run.run_dir, "
                         f"or the stages and settings the round began with")
    if not before:
        rt.run.set("round", now)


def run_round(rt: Runtime, root: RunDir, start: tuple[str, str],
              prev_critic: str | None) -> tuple[tuple[str, str], str | None]:
    """critic -> rft -> dpo -> eval from `start`; returns the round's final model and critic."""
    cfg, r = rt.cfg, rt.round_no
    stages = cfg.run.stages
    record_round(rt, start)
    judge, policy = None, "rule"
    if "critic" in stages:
        init = critic_start(cfg.run.round_critic, r, start[0], prev_critic)
        done = once(rt, "critic", lambda: run_critic_stage(rt, None if r == 1 else start, init,
                                                           earlier_critiques(root, r, cfg.run.round_mix)))
        judge = (done["checkpoint"], weights_version(rt, "critic")) if done["checkpoint"] else None
        policy = critic_gate(rt, done["metrics"])
    models = {"base": start} if r == 1 else {}
    if "rft" in stages:
        done = once(rt, "rft", lambda: run_rft_stage(rt, judge, policy, start))
        models["rft"] = (done["checkpoint"], weights_version(rt, "rft"))
    if "dpo" in stages:
        if "rft" not in models:
            raise StageError("dpo needs the rft stage (its model is DPO's starting point and reference)")
        rft_ckpt = models["rft"][0]
        done = once(rt, "dpo", lambda: run_dpo_stage(rt, rft_ckpt, judge, policy))
        models["dpo"] = (done["checkpoint"], weights_version(rt, "dpo"))
    if "eval" in stages:
        once(rt, "eval", lambda: (None, eval_metrics(rt, models, judge)))
    return final_model(models, start), (judge[0] if judge else prev_critic)


def earlier_critiques(root: RunDir, r: int, share: float) -> list:
    """Round r-1's critic data (which holds the rounds before it), read only when round r's critic runs."""
    if r == 1:
        return []
    return [x for x in critique_records_of(round_dir(root.root, r - 1) / "critic", r - 1) if in_mix(x.key, share)]


def eval_metrics(rt: Runtime, models: dict, judge) -> dict:
    m = run_eval_stage(rt, models, judge)
    m["critic_accuracy"] = ((rt.run.done("critic") or {}).get("metrics") or {}).get("critic_accuracy")
    return m


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.self_critique", description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="YAML profile, e.g. configs/cpu-demo.yaml")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rft.lr=1e-5 run.run_dir=runs/x")
    ap.add_argument("--plan", action="store_true", help="print what every stage's actors ask for, check it, exit")
    ap.add_argument("--cluster", help="with --plan: a cluster/*.yaml or KubeRay manifest to fit, or 'live'")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
        if args.plan:
            from pipelines.plan import connect_and_show
            return connect_and_show(cfg, args.cluster)
        command = " ".join(["python -m pipelines.self_critique"] + (argv if argv is not None else sys.argv[1:]))
        summary = run(cfg, command, args.config or "")
    except (ConfigError, DataError, ModelError, StageError) as e:
        print(f"error: {redact(str(e))}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
