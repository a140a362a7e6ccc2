"""The four stages: critic -> rft -> dpo -> eval. Each returns (checkpoint, metrics)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from pathlib import Path

import ray

from core.config import Config
from core.data import DataError
from core.grading import critique_policy, dpo_policy, rft_policy
from core.prompts import judge_messages
from core.critic_eval import balanced_pick, critic_report, heldout_probe, selection_summary
from core.records import GradedSample, Problem, Sample, SFTExample, from_json
from core.rounds import problem_slices
from core.stats import eval_outcomes, paired_table
from actors.buffer import decode_item
from actors.journal import Journal
from learners.ref_scorer import ReferenceScorer
from learners.trainer import LearnJob
from pipelines.placement import reference_scorer_ask
from pipelines.runtime import Runtime
from pipelines.stream_learn import (StageError, make_buffer, remaining_problems, rollout_with_progress,
                                    stream_and_learn)

log = logging.getLogger("selfcritique")


def make_job(rt: Runtime, stage: str, kind: str, model_path: str, buffer, lr: float, epochs: int, **extra) -> LearnJob:
    t, r = rt.cfg.train, rt.cfg.resources
    d = rt.run.stage_dir(stage)
    return LearnJob(name=f"{stage}-learner", kind=kind, model_path=model_path, out_dir=str(d / "checkpoint"),
                    storage_dir=str(d / "train"), buffer=buffer, lr=lr, epochs=epochs,
                    micro_batch_size=t.micro_batch_size, grad_accum=t.grad_accum, zero_stage=t.zero_stage,
                    bf16=t.bf16, gradient_checkpointing=t.gradient_checkpointing, max_len=t.max_len,
                    warmup_steps=t.warmup_steps, weight_decay=t.weight_decay, checkpoint_every=t.checkpoint_every,
                    max_failures=t.max_failures, overlap_rollout=t.overlap_rollout,
                    num_workers=r.learner_workers, cpus_per_worker=r.learner_cpus,
                    threads_per_worker=r.learner_threads,
                    gpus_per_worker=r.learner_gpus, resources_per_worker=r.learner_resources, seed=rt.cfg.run.seed,
                    **extra)


def read_lineage(path: Path) -> list[GradedSample]:
    if not path.exists():
        return []
    return [from_json(json.loads(x)) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def weights_version(rt: Runtime, stage: str) -> str:
    """The version an engine knows a stage's weights by: unique per round, or an engine that
    already holds round 1's critic would not load round 2's."""
    return stage if rt.round_no == 1 else f"round{rt.round_no}-{stage}"


def _heldout(problems: list[Problem], fraction: float) -> frozenset[str]:
    return frozenset(p.id for p in problems
                     if int(hashlib.sha256(p.id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction)


# ------------------------------------------------------------------------------ critic


def load_critique_records(path: str, calculator: bool = False) -> list[SFTExample]:
    """Critique records: question, reference, response, critique (analysis), score.

    One JSON object a line. Lines are split on "\\n" only (str.splitlines would also
    split inside a record at U+2028 or U+0085, valid raw in JSON strings), and each line
    is decoded on its own, so a bad byte or a bad row is reported with file:line.
    """
    out = []
    p = Path(path)
    if not p.is_file():
        raise DataError(f"critic.records_path: {p} does not exist")
    with p.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise DataError(f"{p}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{lineno}: malformed JSON ({e.msg} at column {e.colno}); truncated line?") from None
            except RecursionError:
                raise DataError(f"{p}:{lineno}: malformed JSON (nested too deeply to parse)") from None
            if not isinstance(row, dict):
                raise DataError(f"{p}:{lineno}: expected a JSON object with fields question, reference, response, "
                                f"critique, score; got {type(row).__name__}")
            for f in ("question", "reference", "response", "critique", "score"):
                if f not in row or row[f] is None:
                    expected = "a number from 1 to 10" if f == "score" else "a string"
                    raise DataError(f"{p}:{lineno}: missing field {f!r}{' (null)' if f in row else ''}, "
                                    f"expected {expected}")
            for f in ("question", "reference", "response", "critique"):
                v = row[f]
                if not isinstance(v, str):
                    raise DataError(f"{p}:{lineno}: field {f!r} has type {type(v).__name__}, expected a string")
                if f != "reference" and not v.strip():
                    raise DataError(f"{p}:{lineno}: field {f!r} is empty, expected a non-empty string")
            score = row["score"]
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not 1 <= score <= 10:
                raise DataError(f"{p}:{lineno}: field 'score' must be a number from 1 to 10, got {score!r}")
            answer = row.get("answer")
            prob = Problem(f"rec-{lineno}", row["question"], row["reference"], "" if answer is None else str(answer))
            text = f"{row['critique'].strip()}\nScore: {score:g}"
            out.append(SFTExample(f"record:{lineno}", judge_messages(prob, row["response"], calculator), text))
    if not out:
        raise DataError(f"{p}: no critique records (the file is empty or has only blank lines)")
    return out


def critic_accuracy(rt: Runtime, heldout: list[GradedSample], judge_ckpt, out_path: Path | None = None,
                    add_references: bool = True) -> dict:
    """The judge on a held-out probe with both classes: balanced accuracy against the true
    band, AUC against the rule label, mean score per band, flawed-work detection."""
    c = rt.cfg.critic
    items = heldout_probe(heldout, keep_threshold=c.keep_threshold, min_per_class=c.heldout_min_per_class,
                          add_references=add_references)
    if not items:
        return {"critic_balanced_accuracy": None, "critic_n": 0}
    grades = judge_all(rt, [Sample(it.problem, 0, it.response) for it in items], judge_ckpt)
    scores = {it.key: (g.score if g is not None else None) for it, g in zip(items, grades)}
    if out_path is not None:
        write_probe(out_path, items, grades)
    return critic_report(items, scores, c.keep_threshold)


def judge_all(rt: Runtime, samples: list[Sample], judge_ckpt) -> list:
    """Model grades for samples, spread over the critic actors."""
    critics = rt.critics("model")
    critics.call_all("ensure_checkpoint", *judge_ckpt)
    chunk = max(1, len(samples) // len(critics) + 1)
    refs = [critics.actors[i % len(critics)].judge_texts.remote(samples[j:j + chunk])
            for i, j in enumerate(range(0, len(samples), chunk))]
    return [g for part in ray.get(refs) for g in part]


def write_probe(path: Path, items: list, grades: list) -> None:
    """One line per probe item: what the judge read, its true band, and what the judge wrote."""
    with path.open("w", encoding="utf-8") as fh:
        for it, g in zip(items, grades):
            fh.write(json.dumps({"key": it.key, "kind": it.kind, "true_score": it.truth.score,
                                 "true_analysis": it.truth.analysis, "rule_verdict": it.rule_verdict,
                                 "response": it.response, "critic_score": g.score if g else None,
                                 "critic_analysis": g.analysis if g else ""}) + "\n")


def run_critic_stage(rt: Runtime, sample_from: tuple[str, str] | None = None, init_model: str | None = None,
                     earlier: list[SFTExample] = ()) -> tuple[str | None, dict]:
    """Bootstrap critique data from `sample_from`'s responses (the base model in round 1), train
    the critic from `init_model` on it plus `earlier` rounds' critiques, and probe it."""
    cfg: Config = rt.cfg
    c = cfg.critic
    d = rt.run.stage_dir("critic")
    if not c.train:
        return None, {"critic": "base model as judge (critic.train=false)"}
    problems = rt.problems("train")[: c.bootstrap_problems]
    heldout = _heldout(problems, c.heldout_fraction)
    buffer_dir = d / "rollout"
    if c.records_path:
        buffer = make_buffer(rt, buffer_dir, None)
        records = load_critique_records(c.records_path, c.calculator_notes)
        ray.get(buffer.put_items.remote([ray.put(x) for x in records]))
        todo = []
    else:
        buffer = make_buffer(rt, buffer_dir, c.bootstrap_samples,
                             functools.partial(critique_policy, heldout=heldout, max_wrong=c.max_wrong_per_prompt,
                                                   hard_negatives=c.hard_negatives, balance=c.balance_classes,
                                                   counterfactual=c.counterfactual_answers,
                                                   keep_threshold=c.keep_threshold,
                                                   calculator=c.calculator_notes))
        todo = remaining_problems(problems, buffer_dir / "lineage.jsonl", c.bootstrap_samples)
    if earlier:  # deduplicated by key: a resumed stage does not add them twice
        ray.get(buffer.put_items.remote([ray.put(x) for x in earlier]))
    if not todo:
        ray.get(buffer.close.remote())
    init_model = init_model or rt.model_path
    job = make_job(rt, "critic", "sft", init_model, buffer, c.lr, c.epochs)
    spec = rt.sampling(n=c.bootstrap_samples)
    rep = stream_and_learn(rt, "critic", todo, spec, job, buffer, critic_policy="rule", policy_ckpt=sample_from)
    ckpt = job.out_dir
    held = [g for g in read_lineage(buffer_dir / "lineage.jsonl") if g.sample.problem.id in heldout]
    acc = critic_accuracy(rt, held, (ckpt, weights_version(rt, "critic")), d / "heldout_probe.jsonl")
    metrics = {**acc, "critic_train_examples": rep["buffer"]["acked"], "critic_steps": rep["learner"]["micro"],
               **learner_throughput(rep["learner"]), "critic_init_model": init_model,
               "critique_samples_from": (sample_from or (rt.model_path, "base"))[0],
               "earlier_round_critiques": len(earlier)}
    rt.tracker.log({f"critic/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
    return ckpt, metrics


def critique_records_of(stage_dir: Path, round_no: int) -> list[SFTExample]:
    """What a finished critic stage trained on, for the next round to mix in.

    Its deliverables already hold every earlier round's critiques (keyed `round<k>/...`);
    its own get its round's prefix, so that they never collide with the next round's own.
    Records from critic.records_path are left out: every round reads that file itself."""
    path = stage_dir / "rollout" / "deliverables.jsonl"
    out = []
    for row in Journal.read(path):
        x = decode_item(row["item"])
        if not isinstance(x, SFTExample) or x.key.startswith("record:"):
            continue
        out.append(x if x.key.startswith("round") else dataclasses.replace(x, key=f"round{round_no}/{x.key}"))
    return out


def critic_gate(rt: Runtime, metrics: dict) -> str:
    """Return the grading policy later stages use, or stop when the critic is too weak.

    The gate reads balanced accuracy: with mostly wrong held-out responses, a critic that
    calls everything wrong has high raw accuracy.
    """
    c = rt.cfg.critic
    acc = metrics.get("critic_balanced_accuracy")
    if acc is None or acc >= c.accuracy_gate:
        return c.policy
    msg = (f"critic balanced accuracy {acc:.3f} on {metrics.get('critic_n')} held-out responses is below the "
           f"gate critic.accuracy_gate={c.accuracy_gate} (the paper's failure signal)")
    if c.on_gate_fail == "stop":
        raise StageError(msg + "; stopping. Set critic.on_gate_fail=use_rule to continue with the rule grader.")
    log.warning("%s; continuing with the rule grader only", msg)
    return "rule"


# ------------------------------------------------------------------------------ rft / dpo


def round_problems(rt: Runtime, stage: str) -> list[Problem]:
    """This round's RFT or DPO problems (core/rounds.py: fresh ones each round, or the same)."""
    cfg, train = rt.cfg, rt.problems("train")
    rft, dpo = problem_slices(len(train), cfg.rft.problems, cfg.dpo.problems, rt.round_no, cfg.run.round_problems)
    return [train[i] for i in (rft if stage == "rft" else dpo)]


def run_rft_stage(rt: Runtime, judge_ckpt, policy: str, start: tuple[str, str] | None = None) -> tuple[str, dict]:
    """Sample from `start` (the base model in round 1), grade, keep, and fine-tune `start`."""
    cfg = rt.cfg
    d = rt.run.stage_dir("rft")
    start = start or (rt.model_path, "base")
    problems = round_problems(rt, "rft")
    group_policy = functools.partial(rft_policy, threshold=cfg.critic.keep_threshold,
                                     max_kept=cfg.rft.max_kept_per_prompt, system_prompt=cfg.model.system_prompt)
    buffer = make_buffer(rt, d / "rollout", cfg.rft.samples_per_prompt, group_policy)
    todo = remaining_problems(problems, d / "rollout" / "lineage.jsonl", cfg.rft.samples_per_prompt)
    job = make_job(rt, "rft", "sft", start[0], buffer, cfg.rft.lr, cfg.rft.epochs)
    rep = stream_and_learn(rt, "rft", todo, rt.sampling(n=cfg.rft.samples_per_prompt), job, buffer,
                           critic_policy=policy, policy_ckpt=start, judge_ckpt=judge_ckpt)
    m = _rollout_metrics(rt, "rft", d / "rollout", rep)
    return job.out_dir, m


def dpo_problems(rt: Runtime) -> list[Problem]:
    """A different slice of the training problems than RFT saw, when there are enough."""
    return round_problems(rt, "dpo")


def dpo_pair_buffer(rt: Runtime, rft_ckpt: str, directory: Path):
    """A buffer that groups the samples of one problem into DPO pairs and adds the reference
    (RFT) model's log-probs to each pair once. Returns (buffer, scorer); kill the scorer after."""
    cfg = rt.cfg
    ask = reference_scorer_ask(cfg.resources)  # the learners' kind of device: a GPU when they have GPUs
    scorer = ray.remote(ReferenceScorer).options(**ask.options(), max_restarts=2, max_task_retries=2).remote(
        rft_ckpt, cfg.train.max_len, cfg.model.dtype, device=ask.device)
    group_policy = functools.partial(dpo_policy, min_gap=cfg.dpo.min_score_gap,
                                     max_pairs=cfg.dpo.max_pairs_per_prompt, system_prompt=cfg.model.system_prompt)
    return make_buffer(rt, directory, cfg.dpo.samples_per_prompt, group_policy, enricher=scorer), scorer


def dpo_job(rt: Runtime, stage: str, rft_ckpt: str, buffer, beta: float, nll_coef: float) -> LearnJob:
    d = rt.cfg.dpo
    return make_job(rt, stage, "dpo", rft_ckpt, buffer, d.lr, d.epochs, beta=beta, nll_coef=nll_coef,
                    label_smoothing=d.label_smoothing, dpo_loss=d.loss)


def run_dpo_stage(rt: Runtime, rft_ckpt: str, judge_ckpt, policy: str) -> tuple[str, dict]:
    cfg = rt.cfg
    d = rt.run.stage_dir("dpo")
    buffer, scorer = dpo_pair_buffer(rt, rft_ckpt, d / "rollout")
    todo = remaining_problems(dpo_problems(rt), d / "rollout" / "lineage.jsonl", cfg.dpo.samples_per_prompt)
    job = dpo_job(rt, "dpo", rft_ckpt, buffer, cfg.dpo.beta, cfg.dpo.nll_coef)
    rep = stream_and_learn(rt, "dpo", todo, rt.sampling(n=cfg.dpo.samples_per_prompt), job, buffer,
                           critic_policy=policy, policy_ckpt=(rft_ckpt, weights_version(rt, "rft")),
                           judge_ckpt=judge_ckpt)
    ray.kill(scorer)
    m = _rollout_metrics(rt, "dpo", d / "rollout", rep)
    m["pairs"] = rep["buffer"]["acked"]
    return job.out_dir, m


def _rollout_metrics(rt: Runtime, stage: str, rollout_dir: Path, rep: dict) -> dict:
    graded = read_lineage(rollout_dir / "lineage.jsonl")
    scores = [g.grade.score for g in graded if g.grade.score is not None]
    decisions = [json.loads(x) for x in (rollout_dir / "decisions.jsonl").read_text().splitlines()] \
        if (rollout_dir / "decisions.jsonl").exists() else []
    kept = sum(1 for x in decisions if x["kept"])
    rt.tracker.histogram(f"{stage}/score_hist", scores)
    n_rows = rt.cfg.logging.sample_table_rows
    rt.tracker.table(f"{stage}/samples", ["problem", "response", "score", "verdict", "grader", "reason"],
                     [[g.sample.problem.question, g.sample.response, g.grade.score, g.grade.verdict, g.grade.grader,
                       g.grade.reason] for g in graded[:n_rows]])
    m = {"samples": len(graded), "mean_score": sum(scores) / len(scores) if scores else None,
         "sample_accuracy": sum(g.grade.verdict == "correct" for g in graded) / max(len(graded), 1),
         "kept": kept, "rejected": len(decisions) - kept, "train_steps": rep["learner"]["micro"],
         "train_tokens": rep["learner"]["tokens"], **learner_throughput(rep["learner"]),
         "rollout_tok_per_s": rep.get("rollout", {}).get("wall_seconds")
         and rep["rollout"]["tokens"] / rep["rollout"]["wall_seconds"]}
    rt.tracker.log({f"{stage}/{k}": v for k, v in m.items() if v is not None})
    m["selection"] = selection_summary(graded, rt.cfg.critic.keep_threshold, {x["key"] for x in decisions if x["kept"]})
    return m


def learner_throughput(summary: dict) -> dict:
    """Seconds in optimizer steps (no waiting for data) and the prompt+response tokens they trained,
    from the learner's rank-0 summary; a resumed learner reports its last attempt."""
    secs, toks = summary.get("step_seconds"), summary.get("seq_tokens")
    return {"train_step_seconds": secs, "train_seq_tokens": toks,
            "trained_tok_per_s": toks / secs if secs and toks is not None else None}


# ------------------------------------------------------------------------------ eval


def greedy_accuracy(rt: Runtime, label: str, ckpt: tuple[str, str], problems: list[Problem]) -> dict:
    d = rt.run.stage_dir("eval") / label
    budget = rt.cfg.eval.max_new_tokens
    greedy_rollout(rt, f"eval-{label}", d, ckpt, problems, budget)
    graded = read_lineage(d / "lineage.jsonl")
    recheck = None
    if rt.cfg.eval.recheck_cut_offs:
        cut = {g.sample.problem.id for g in graded if g.sample.finish_reason == "length"}
        again = [p for p in problems if p.id in cut]
        if again:
            greedy_rollout(rt, f"eval-{label}-recheck", recheck_dir(d), ckpt, again, 2 * budget)
            recheck = read_lineage(recheck_dir(d) / "lineage.jsonl")
    return eval_outcomes(graded, recheck)


def recheck_dir(eval_dir: Path) -> Path:
    """Where a model's cut-off eval responses are generated again with twice the budget."""
    return eval_dir.with_name(eval_dir.name + "-recheck")


def eval_dir_outcomes(eval_dir: Path) -> dict:
    """eval_outcomes of one model's eval directory, with its cut-off recheck where one ran."""
    again = recheck_dir(eval_dir) / "lineage.jsonl"
    return eval_outcomes(read_lineage(eval_dir / "lineage.jsonl"), read_lineage(again) if again.exists() else None)


def greedy_rollout(rt: Runtime, name: str, d: Path, ckpt: tuple[str, str], problems: list[Problem],
                   max_new_tokens: int, critic_policy: str = "rule", **judge) -> None:
    """One greedy, graded response per problem into d's lineage (resumes: only the missing ones)."""
    buffer = make_buffer(rt, d, None)
    todo = remaining_problems(problems, d / "lineage.jsonl", 1)
    if todo:
        rollout_with_progress(rt, name, todo, buffer, rt.sampling(greedy=True, max_new_tokens=max_new_tokens),
                              critic_policy=critic_policy, policy_ckpt=ckpt, **judge)
    else:
        ray.get(buffer.close.remote())
    ray.kill(buffer)


def critic_scored(rt: Runtime, label: str, ckpt: tuple[str, str], judge_ckpt, problems: list[Problem]) -> dict:
    """MathUserEval-style: free-form answers, so the critic (judge) scores them by category."""
    d = rt.run.stage_dir("eval") / f"{label}-critic"
    greedy_rollout(rt, f"eval-{label}-critic", d, ckpt, problems, rt.cfg.eval.max_new_tokens,
                   critic_policy="model", judge_ckpt=judge_ckpt)
    by_cat: dict[str, list[float]] = {}
    for g in read_lineage(d / "lineage.jsonl"):
        if g.grade.score is not None:
            by_cat.setdefault(g.sample.problem.category.split("/")[0] or "all", []).append(g.grade.score)
    return {k: sum(v) / len(v) for k, v in sorted(by_cat.items())}


def run_eval_stage(rt: Runtime, models: dict[str, tuple[str, str]], judge_ckpt) -> dict:
    cfg = rt.cfg
    problems = rt.problems("test")[: cfg.eval.problems]
    results: dict = {"accuracy": {}, "by_category": {}, "n_eval": len(problems), "truncated": {}, "looping": {},
                     "runaway": {}, "cut_off_unanswered": {}, "max_new_tokens": cfg.eval.max_new_tokens,
                     "recheck_max_new_tokens": 2 * cfg.eval.max_new_tokens if cfg.eval.recheck_cut_offs else None}
    responses, correct = [], {}
    for label, ckpt in models.items():
        r = greedy_accuracy(rt, label, ckpt, problems)
        results["accuracy"][label] = r["accuracy"]
        results["by_category"][label] = r["by_category"]
        results["truncated"][label] = r["truncated"]
        results["looping"][label] = r["looping"]
        results["runaway"][label] = r["runaway"]
        results["cut_off_unanswered"][label] = r["cut_off_unanswered"]
        correct[label] = r["correct"]
        responses += r["graded"]
        rt.tracker.log({f"eval/accuracy_{label}": r["accuracy"], f"eval/truncated_{label}": r["truncated"]})
    results["paired"] = paired_table(correct, seed=cfg.run.seed)
    n = cfg.eval.critic_on_eval
    if n and judge_ckpt is not None and responses:
        acc = critic_accuracy(rt, balanced_pick(responses, n), judge_ckpt,
                              rt.run.stage_dir("eval") / "critic_probe.jsonl", add_references=False)
        results["critic_on_eval"] = acc
        rt.tracker.log({f"eval/{k}": v for k, v in acc.items() if v is not None})
    if cfg.eval.mathusereval_path and judge_ckpt is not None:
        from core.config import DatasetSpec
        from core.data import load_problems

        mue, _ = load_problems(DatasetSpec(kind="mathusereval", path=cfg.eval.mathusereval_path,
                                           limit=cfg.eval.mathusereval_limit), cfg.data.on_bad_row)
        results["critic_scores"] = {label: critic_scored(rt, label, ckpt, judge_ckpt, mue)
                                    for label, ckpt in models.items()}
    return results
