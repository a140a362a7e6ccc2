"""The results writer (pipelines/results.py) on a run directory built here, and its schema check.

The run directory is fake (no pipeline ran) but has the files a real one has: a manifest
with stage metrics, config.json and the eval stage's lineage.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from core.records import Grade, GradedSample, Problem, Sample, lineage_json
from core.stats import eval_outcomes, paired_table
from pipelines.results import (MACHINE_KEYS, PAIRS, REQUIRED, build, check, config_sha256, main, provenance,
                               publish, stage_minutes, write_summary)
from pipelines.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted((ROOT / "docs" / "results").glob("cpu-demo*.json"))
N = 30


def _answer(stage: str, i: int) -> tuple[str, str, str]:
    """(response, finish reason, verdict) of a stage on problem i: later stages get more right."""
    right = i % {"base": 5, "rft": 3, "dpo": 2}[stage] == 0
    if stage == "base" and i % 7 == 1:  # cut off mid-way; its last number happens to be the answer
        return "so far 42 and then 42", "length", "correct"
    return (f"The answer is {42 if right else 41}.", "stop", "correct" if right else "incorrect")


def write_eval_lineage(root: Path) -> dict[str, list[GradedSample]]:
    out = {}
    for stage in ("base", "rft", "dpo"):
        gs = []
        for i in range(N):
            text, finish, verdict = _answer(stage, i)
            gs.append(GradedSample(Sample(Problem(f"p{i}", "q", answer="42", category=f"level{1 + i % 2}"), 0, text,
                                          finish_reason=finish), Grade(9.0 if verdict == "correct" else 2.0, verdict)))
        d = root / "eval" / stage
        d.mkdir(parents=True)
        (d / "lineage.jsonl").write_text("".join(json.dumps(lineage_json(g)) + "\n" for g in gs))
        out[stage] = gs
    return out


@pytest.fixture
def run_dir(tmp_path) -> RunDir:
    """A finished run as the pipeline leaves it, except that the eval metrics predate paired/truncated."""
    root = tmp_path / "run"
    root.mkdir()
    config = {"run": {"run_dir": str(root), "seed": 0}, "eval": {"max_new_tokens": 96}}
    (root / "config.json").write_text(json.dumps(config))
    graded = write_eval_lineage(root)
    outcomes = {s: eval_outcomes(g) for s, g in graded.items()}
    run = RunDir(root)
    t = time.time()
    crit = {"critic_accuracy": 0.8, "critic_balanced_accuracy": 0.7, "critic_n": 10, "critic_n_correct_label": 3,
            "critic_auc": 0.75, "flawed_work_detection": 0.6}
    stage_metrics = {
        "critic": crit, "rft": {"samples": 24, "kept": 5, "rejected": 19}, "dpo": {"samples": 24, "kept": 8, "rejected": 16},
        "eval": {"accuracy": {s: o["accuracy"] for s, o in outcomes.items()}, "n_eval": N,
                 "by_category": {s: o["by_category"] for s, o in outcomes.items()}, "a_new_eval_field": [1, 2],
                 "critic_on_eval": {"critic_accuracy": 0.9, "critic_balanced_accuracy": 0.85, "critic_n": 12,
                                    "critic_n_correct_label": 4}}}
    for i, (stage, m) in enumerate(stage_metrics.items()):
        run.mark_started(stage)
        run.manifest["stages"][stage]["started"] = t + 60 * i
        run.mark_done(stage, None, m)
        run.manifest["stages"][stage]["finished"] = t + 60 * i + 30 * (i + 1)
    run.set("last_run_minutes", 3.5)
    prov = provenance(config, "python -m pipelines.self_critique --config x.yaml", "x.yaml")
    prov["commit"] = prov["commit"] or "0" * 40  # a source archive has no git: a run there records none
    run.set("provenance", prov)
    return run


def test_build_has_the_schema_and_passes_its_own_check(run_dir):
    res = build(run_dir)
    assert set(REQUIRED) <= set(res)
    assert check(res) == []
    assert set(res["machine"]) >= set(MACHINE_KEYS) and res["machine"]["cores"] >= 1
    assert set(res["paired"]) == set(PAIRS)


def test_fields_the_stages_add_pass_through(run_dir):
    res = build(run_dir)
    for k in ("critic_auc", "flawed_work_detection", "critic_balanced_accuracy"):
        assert res[k] == run_dir.manifest["stages"]["critic"]["metrics"][k]
    assert res["a_new_eval_field"] == run_dir.manifest["stages"]["eval"]["metrics"]["a_new_eval_field"]


def test_old_runs_get_truncation_and_paired_figures_from_the_eval_lineage(run_dir):
    res = build(run_dir)
    cut = sum(_answer("base", i)[1] == "length" for i in range(N))
    assert res["truncated"]["base"] == pytest.approx(cut / N) and res["truncated"]["dpo"] == 0
    base_right = {f"p{i}" for i in range(N) if _answer("base", i) == ("The answer is 42.", "stop", "correct")}
    dpo_right = {f"p{i}" for i in range(N) if _answer("dpo", i)[2] == "correct"}
    p = res["paired"]["dpo_vs_base"]
    assert p["up"] == len(dpo_right - base_right) and p["down"] == len(base_right - dpo_right)
    assert p["diff"] == pytest.approx((len(dpo_right) - len(base_right)) / N)


def test_eval_figures_in_the_metrics_are_used_as_they_are(run_dir):
    ev = run_dir.manifest["stages"]["eval"]["metrics"]
    ev["truncated"] = {s: 0.0 for s in ev["accuracy"]}
    ev["paired"] = paired_table({s: {"p0": True} for s in ev["accuracy"]})
    res = build(run_dir)
    assert res["truncated"] == ev["truncated"] and res["paired"] == ev["paired"]


def test_stage_minutes_come_from_the_manifest_times(run_dir):
    st = run_dir.manifest["stages"]
    assert stage_minutes(st) == {s: round((e["finished"] - e["started"]) / 60, 2) for s, e in st.items()}


def test_critic_note_is_written_from_the_figures(run_dir):
    note = build(run_dir)["critic_note"]
    assert "0.700" in note and "10 responses" in note and "12 eval responses" in note


@pytest.mark.parametrize("breaks,why", [
    (lambda r: r.pop("paired"), "missing field 'paired'"),
    (lambda r: r["machine"].pop("bf16_native"), "machine: expected an object"),
    (lambda r: r.update(machine="Intel Xeon, 2 cores"), "machine: expected an object"),
    (lambda r: r.update(commit=None), "commit: expected a non-empty string"),
    (lambda r: r["truncated"].pop("rft"), "truncated: expected a share"),
    (lambda r: r["paired"]["dpo_vs_rft"].update(ci95=[0.1]), "paired.dpo_vs_rft.ci95"),
    (lambda r: r["paired"]["rft_vs_base"].pop("up"), "paired.rft_vs_base: expected an object"),
])
def test_check_names_what_is_wrong(run_dir, breaks, why):
    res = build(run_dir)
    breaks(res)
    assert any(why in e for e in check(res)), check(res)


def test_config_hash_ignores_the_run_dir_only():
    a = {"run": {"run_dir": "runs/a", "seed": 0}, "rft": {"lr": 1e-5}}
    assert config_sha256(a) == config_sha256({**a, "run": {"run_dir": "runs/b", "seed": 0}})
    assert config_sha256(a) != config_sha256({**a, "rft": {"lr": 2e-5}})
    assert a["run"]["run_dir"] == "runs/a"  # the caller's dict is left alone


def test_publish_copies_the_checked_summary_and_plots_and_renders_the_report(run_dir, tmp_path):
    dest = tmp_path / "docs" / "cpu-demo.json"
    publish(run_dir.root, dest)
    assert dest.read_bytes() == (run_dir.root / "summary.json").read_bytes()
    assert check(json.loads(dest.read_text())) == []
    assert (tmp_path / "docs" / "cpu-demo-plots" / "accuracy.png").exists()
    report = (run_dir.root / "report.md").read_text()
    assert "dpo vs base" in report and "95% interval" in report
    assert "**Warning:**" in report and "base's responses were cut off" in report  # base is over 5% cut off
    assert "dpo's responses were cut off" not in report


def test_publish_refuses_results_that_fail_the_check(run_dir, tmp_path, capsys):
    run_dir.manifest["provenance"]["machine"] = "typed by hand"
    run_dir._save()
    dest = tmp_path / "out.json"
    assert main([str(run_dir.root), "--publish", str(dest)]) == 2
    assert "machine: expected an object" in capsys.readouterr().err and not dest.exists()


def test_report_command_on_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_the_published_demo_is_there():
    assert "cpu-demo.json" in [p.name for p in COMMITTED]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_demo_results_match_the_writers_schema(path):
    """docs/results/cpu-demo*.json are what `./dev report RUN --publish` wrote: they pass the same check."""
    res = json.loads(path.read_text())
    assert check(res) == []
    assert set(REQUIRED) <= set(res)


def test_committed_sweep_and_rounds_results_match_their_writers_schema():
    """docs/results/sweep.json and rounds.json are what `--publish` wrote: they pass the same checks."""
    from pipelines.rounds import check_rounds
    from pipelines.sweep import check_sweep

    assert check_sweep(json.loads((ROOT / "docs" / "results" / "sweep.json").read_text())) == []
    assert check_rounds(json.loads((ROOT / "docs" / "results" / "rounds.json").read_text())) == []


def test_committed_efficacy_is_its_writers_aggregate_over_at_least_three_seeds(monkeypatch):
    """bench/results/efficacy.json: each stage's mean and spread are `aggregate` of its per-seed
    figures, from at least 3 seeds on one machine, each with its commit."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from efficacy import aggregate

    res = json.loads((ROOT / "bench" / "results" / "efficacy.json").read_text())
    seeds = res["seeds"]
    assert len(seeds) >= 3 and len(res["commit_per_seed"]) == len(seeds)
    summaries = {k: {"accuracy": {s: v["accuracy_per_seed"][i] for s, v in res["stages"].items()},
                     "paired": {p: {"diff": v["diff_per_seed"][i], "ci95": v["ci95_per_seed"][i]}
                                for p, v in res["paired"].items()}}
                 for i, k in enumerate(seeds)}
    again = aggregate(summaries)
    for stage, v in res["stages"].items():
        assert v["accuracy_mean"] == pytest.approx(again["stages"][stage]["accuracy_mean"])
        assert v["accuracy_sd"] == pytest.approx(again["stages"][stage]["accuracy_sd"])
    assert {"base", "rft", "dpo"} <= set(res["stages"]) and {"dpo_vs_base", "dpo_vs_rft"} <= set(res["paired"])
    assert all(m == res["machine"] for m in res["machine_per_seed"]) and res["machine"]["cpu_model"]


def test_a_run_without_recorded_provenance_says_when_it_was_detected(run_dir, tmp_path):
    del run_dir.manifest["provenance"]
    run_dir._save()
    res = write_summary(run_dir)
    assert "report was written" in res["provenance_detected"] and res["machine"]["cores"] >= 1


def test_a_run_without_recorded_provenance_takes_its_commit_from_the_command_line(run_dir, capsys):
    recorded = run_dir.manifest["provenance"]["commit"]
    assert main([str(run_dir.root), "--run-commit", "c" * 40]) == 2  # the run recorded one: refused
    assert "recorded its commit" in capsys.readouterr().err
    del run_dir.manifest["provenance"]
    run_dir._save()
    assert main([str(run_dir.root)]) == 0
    assert json.loads(capsys.readouterr().out)["commit"] != "c" * 40
    assert main([str(run_dir.root), "--run-commit", "c" * 40]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["commit"] == "c" * 40 != recorded and "--run-commit" in res["provenance_detected"]


def test_a_baseline_puts_its_stage_times_beside_this_runs_in_the_report(run_dir, tmp_path):
    base = build(run_dir) | {"commit": "b" * 40, "stage_minutes": {"critic": 12.25, "rft": 4.5}}
    base["rft"] = {"trained_tok_per_s": 77.5}
    (tmp_path / "base.json").write_text(json.dumps(base))
    run_dir.manifest["stages"]["rft"]["metrics"] |= {"train_steps": 8, "train_step_seconds": 20.0,
                                                     "train_seq_tokens": 3000, "trained_tok_per_s": 150.0}
    run_dir._save()
    assert main([str(run_dir.root), "--baseline", str(tmp_path / "base.json")]) == 0
    report = (run_dir.root / "report.md").read_text()
    section = report.split("## Stage times and learner throughput")[1]
    row = next(x for x in section.splitlines() if x.startswith("| rft |"))
    assert [c.strip() for c in row.split("|")[2:-1]] == ["1.0", "4.5", "8", "20.0", "3000", "150.0", "77.5"]
    assert "minutes at bbbbbbb" in report and "another CPU model" not in report
    assert "another config" not in report and "recorded no step seconds" not in report


def test_a_baseline_of_another_config_and_without_learner_rates_is_said_so(run_dir, tmp_path):
    base = build(run_dir) | {"commit": "b" * 40, "config_sha256": "f" * 64}
    (tmp_path / "base.json").write_text(json.dumps(base))
    assert main([str(run_dir.root), "--baseline", str(tmp_path / "base.json")]) == 0
    section = (run_dir.root / "report.md").read_text().split("## Stage times and learner throughput")[1]
    assert "ran another config" in section and "recorded no step seconds" in section


@pytest.mark.parametrize("content,why", [("{", "cannot read"), ('{"commit": "x"}', "machine, stage_minutes")])
def test_a_baseline_that_is_not_a_published_results_file_is_refused(run_dir, tmp_path, capsys, content, why):
    (tmp_path / "base.json").write_text(content)
    assert main([str(run_dir.root), "--baseline", str(tmp_path / "base.json")]) == 2
    err = capsys.readouterr().err
    assert "base.json" in err and why in err


def test_a_resumed_stage_is_named_in_the_report(run_dir):
    run_dir.manifest["stages"]["dpo"]["attempts"] = 2
    run_dir._save()
    assert main([str(run_dir.root)]) == 0
    report = (run_dir.root / "report.md").read_text()
    assert "Resumed: dpo (2 attempts)" in report and "rft (" not in report.split("Resumed:")[1].split("\n")[0]
