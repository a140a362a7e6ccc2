"""The sweep's decisions (pipelines/sweep.py): grid parsing and validation, trial capacity,
outcome rows, the schema check and the outputs, on records built here (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import ConfigError
from pipelines.results import MACHINE_KEYS
from pipelines.sweep import (SweepError, check_sweep, error_summary, grid_points, latest_outcomes, main,
                             outcome_row, parallel_trials, publish, render_markdown, split_grid, trial_name,
                             write_outputs)

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "cpu-demo.yaml")


def test_split_grid_separates_swept_keys_from_overrides():
    grid, rest = split_grid(["dpo.beta=[0.5,1,2]", "dpo.nll_coef=1.5", "run.run_dir=runs/x"])
    assert grid == {"dpo.beta": [0.5, 1, 2], "dpo.nll_coef": [1.5]}
    assert rest == ["run.run_dir=runs/x"]


@pytest.mark.parametrize("items, words", [
    (["dpo.beta=[]"], ["dpo.beta", "non-empty"]),
    (["dpo.beta=[1]", "dpo.beta=[2]"], ["dpo.beta", "twice"]),
    (["dpo.beta"], ["KEY=VALUE"]),
])
def test_split_grid_rejects_bad_axes(items, words):
    with pytest.raises(ConfigError) as e:
        split_grid(items)
    assert all(w in str(e.value) for w in words)


def test_grid_points_cross_product_in_order():
    grid, _ = split_grid(["dpo.beta=[0.5,2]", "dpo.nll_coef=[1,1.5]"])
    pts = grid_points(CONFIG, [], grid)
    assert [(p["beta"], p["nll_coef"]) for p in pts] == [(0.5, 1), (0.5, 1.5), (2, 1), (2, 1.5)]
    assert [p["name"] for p in pts] == ["beta0.5-nll1", "beta0.5-nll1.5", "beta2-nll1", "beta2-nll1.5"]


def test_grid_point_missing_axis_takes_the_config_value():
    pts = grid_points(CONFIG, ["dpo.nll_coef=0.25"], {"dpo.beta": [1, 2]})
    assert [(p["beta"], p["nll_coef"]) for p in pts] == [(1, 0.25), (2, 0.25)]


@pytest.mark.parametrize("grid, key", [({"dpo.beta": [0.5, -1]}, "dpo.beta"),
                                       ({"dpo.nll_coef": ["abc"]}, "dpo.nll_coef")])
def test_grid_point_with_a_bad_value_names_its_key(grid, key):
    with pytest.raises(ConfigError) as e:
        grid_points(CONFIG, [], grid)
    assert key in str(e.value) and "--grid point" in str(e.value)


def test_repeated_points_are_refused():
    with pytest.raises(ConfigError, match="repeated"):
        grid_points(CONFIG, [], {"dpo.beta": [1, 1.0]})


def test_bad_grid_value_exits_2_before_any_work(capsys):
    assert main(["--config", CONFIG, "--grid", "dpo.beta=[0.5,0]", "dpo.nll_coef=[1]"]) == 2
    err = capsys.readouterr().err
    assert "dpo.beta" in err and "greater than 0" in err


def test_trial_name_is_stable_and_distinct():
    assert trial_name(0.5, 1.0) == "beta0.5-nll1"
    assert len({trial_name(b, n) for b in (0.5, 1, 2) for n in (0.5, 1, 1.5)}) == 9


@pytest.mark.parametrize("free, per_trial, cores, threads, expected", [
    ({"CPU": 2.0}, {"CPU": 1.01}, 0.0, 2, 1),  # the 2-core machine: engines hold both cores
    ({"CPU": 2.0}, {"CPU": 1.01}, None, 1, 1),  # a cluster: CPU 2 / 1.01
    ({"CPU": 60.0, "GPU": 6.0}, {"CPU": 1.01, "GPU": 1.0}, None, 1, 6),  # GPUs bind
    ({"CPU": 60.0, "GPU": 6.0}, {"CPU": 4.01, "GPU": 1.0}, None, 1, 6),
    ({"CPU": 8.0, "GPU": 8.0}, {"CPU": 4.01, "GPU": 2.0}, None, 1, 1),  # CPUs bind
    ({"CPU": 64.0}, {"CPU": 1.01, "learner_node": 1.0}, None, 1, 1),  # no learner node yet
    ({"CPU": 62.0}, {"CPU": 2.01}, 62.0, 4, 15),  # one big machine: threads bind
    ({}, {"CPU": 1.0}, None, 1, 1),  # nothing free: still one at a time
])
def test_parallel_trials(free, per_trial, cores, threads, expected):
    assert parallel_trials(free, per_trial, cores, threads) == expected


def test_outcome_rows_and_latest():
    p = {"name": "beta1-nll1", "beta": 1, "nll_coef": 1}
    ok = outcome_row(p, {"accuracy": 0.25, "n_eval": 4, "train_steps": 3}, None)
    bad = outcome_row(p, {}, RuntimeError("Traceback...\n  File x\nFileExistsError: [Errno 17] /r/trials/beta1-nll1"))
    assert ok["status"] == "ok" and ok["accuracy"] == 0.25
    assert bad["status"] == "error" and bad["accuracy"] is None and bad["error"].startswith("FileExistsError")
    other = {"name": "beta2-nll1", "beta": 2, "nll_coef": 1}
    out = latest_outcomes([bad, ok], [p, other])
    assert out[0]["status"] == "ok" and out[1]["status"] == "not run" and out[1]["accuracy"] is None
    assert latest_outcomes([ok, bad], [p])[0]["status"] == "error"


def test_error_summary_keeps_the_last_line():
    assert error_summary("a\n\nValueError: x\n") == "ValueError: x"
    assert len(error_summary("y" * 1000)) == 400


def _result(points: list[dict]) -> dict:
    return {"points": points, "pairs": 5, "pairs_built": 5, "pair_samples": 24, "dpo_problems": 8,
            "eval_problems": 4, "machine": {k: "x" for k in MACHINE_KEYS}, "commit": "abc", "config_sha256": "f00"}


POINTS = [outcome_row({"name": trial_name(b, n), "beta": b, "nll_coef": n}, {"accuracy": 0.5, "n_eval": 4}, None)
          for b in (0.5, 1) for n in (1, 1.5)]


def test_check_sweep_accepts_a_good_result_and_names_what_is_wrong():
    assert check_sweep(_result(POINTS)) == []
    bad = [dict(POINTS[0], status="not run"), dict(POINTS[1], accuracy=None), dict(POINTS[2], beta="x")]
    errs = check_sweep(_result(bad) | {"commit": None, "pairs": 0})
    text = "; ".join(errs)
    for what in ("points[0].status", "points[1].accuracy", "points[2]: beta", "commit", "pairs"):
        assert what in text, (what, text)
    assert check_sweep({"points": []}) == ["points: expected a non-empty list"]


def test_outputs_and_publish(tmp_path):
    failed = outcome_row(POINTS[3], {}, "ValueError: no | pipes")
    res = _result(POINTS[:3] + [failed])
    write_outputs(tmp_path, res)
    md = (tmp_path / "sweep.md").read_text()
    rows = [x for x in md.splitlines() if x.startswith("| ") and x[2].isdigit()]
    assert len(rows) == 4 and "error: ValueError: no / pipes" in rows[3]
    assert (tmp_path / "heatmap.png").stat().st_size > 0
    dest = tmp_path / "pub" / "sweep.json"
    publish(tmp_path, dest)
    assert dest.read_bytes() == (tmp_path / "sweep.json").read_bytes()
    assert dest.with_suffix(".png").exists()
    (tmp_path / "sweep.json").write_text(json.dumps(dict(res, machine=None)))
    with pytest.raises(SweepError, match="machine"):
        publish(tmp_path, dest)


def test_markdown_names_the_shared_pairs():
    md = render_markdown(_result(POINTS))
    assert "Pairs: 5 from 24 samples of 8 problems" in md and "computed 5 times" in md
