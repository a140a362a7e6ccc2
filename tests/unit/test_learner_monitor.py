"""The driver's tail of the learner's metrics logs every row, also those written at the very end."""

import json
import threading
from types import SimpleNamespace

from pipelines.stream_learn import _monitor
from pipelines.tracking import Tracker


def test_rows_written_just_before_the_stop_are_logged(tmp_path):
    metrics = tmp_path / "learner.jsonl"
    rows = [{"stage": "dpo", "step": i, "loss": 0.5 - i / 10, "reward_margin": i / 10} for i in range(3)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "lo')  # last row half-written
    rt = SimpleNamespace(tracker=Tracker(tmp_path, {}, enabled=False, project="p", name="n"))
    stop = threading.Event()
    stop.set()  # the learner ended before the monitor's first poll
    _monitor(rt, "dpo", SimpleNamespace(metrics_path=metrics), buffer=None, stop=stop)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == [{"dpo/train/step": i, "dpo/train/loss": r["loss"], "dpo/train/reward_margin": i / 10}
                      for i, r in enumerate(rows)]
