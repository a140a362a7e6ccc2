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
from pipelines.preflight import check_data_sources
from pipelines.results import provenance, write_summary
from pipelines.run_dir import RunDir
from pipelines.runtime import Runtime, init_ray
from pipelines.stages import (critic_gate, run_critic_stage, run_dpo_stage, run_eval_stage, run_rft_stage)
from pipelines.stream_learn import StageError
from pipelines.tracking import Tracker, redact

log = logging.getLogger("selfcritique")


def run(cfg, command: str = "", config_path: str = "") -> dict:
    t0 = time.time()
    run_dir = RunDir(cfg.run.run_dir)
    (run_dir.root / "config.json").write_text(json.dumps(cfg.model_dump(), indent=2))
    run_dir.set("provenance", provenance(cfg.model_dump(), redact(command), config_path))
    check_data_sources(cfg)
    init_ray(cfg)
    tracker = Tracker(run_dir.root, cfg.model_dump(), cfg.logging.wandb, cfg.logging.project, cfg.logging.run_name)
    rt = Runtime(cfg, run_dir, tracker, resolve_model(cfg.model.name))
    base = (rt.model_path, "base")
    try:
        stages = cfg.run.stages
        judge = None
        policy = "rule" if "critic" not in stages else cfg.critic.policy
        if "critic" in stages:
            done = run_dir.done("critic")
            if done:
                log.info("critic: finished earlier, reusing %s", done["checkpoint"])
            else:
                run_dir.mark_started("critic")
                ckpt, m = run_critic_stage(rt)
                run_dir.mark_done("critic", ckpt, m)
                done = run_dir.done("critic")
            judge = (done["checkpoint"], "critic") if done["checkpoint"] else None
            policy = critic_gate(rt, done["metrics"])
        models = {"base": base}
        rft_ckpt = None
        if "rft" in stages:
            done = run_dir.done("rft")
            if not done:
                run_dir.mark_started("rft")
                ckpt, m = run_rft_stage(rt, judge, policy)
                run_dir.mark_done("rft", ckpt, m)
                done = run_dir.done("rft")
            rft_ckpt = done["checkpoint"]
            models["rft"] = (rft_ckpt, "rft")
        if "dpo" in stages:
            if rft_ckpt is None:
                raise StageError("dpo needs the rft stage (its model is DPO's starting point and reference)")
            done = run_dir.done("dpo")
            if not done:
                run_dir.mark_started("dpo")
                ckpt, m = run_dpo_stage(rt, rft_ckpt, judge, policy)
                run_dir.mark_done("dpo", ckpt, m)
                done = run_dir.done("dpo")
            models["dpo"] = (done["checkpoint"], "dpo")
        if "eval" in stages:
            done = run_dir.done("eval")
            if not done:
                run_dir.mark_started("eval")
                m = run_eval_stage(rt, models, judge)
                crit = (run_dir.done("critic") or {}).get("metrics", {})
                m["critic_accuracy"] = crit.get("critic_accuracy")
                run_dir.mark_done("eval", None, m)
        minutes = (time.time() - t0) / 60
        run_dir.set("last_run_minutes", minutes)
        summary = write_summary(run_dir)
        tracker.summary({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        return {**summary, "report": str(run_dir.root / "report.md"), "run_dir": str(run_dir.root)}
    finally:
        rt.shutdown()
        tracker.finish()


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
