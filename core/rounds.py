"""What each self-critique round uses: its problems, and the models it starts from.

Round 1 is the single run (the run directory's top level); round r >= 2 lives in
`round<r>/` and starts from round r-1's final model. Pure functions on plain values.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


class RoundError(ValueError):
    """A round cannot be laid out with these settings; the message says what to change."""


def round_dir(root: Path, round_no: int) -> Path:
    return root if round_no == 1 else root / f"round{round_no}"


def problem_slices(n_train: int, rft: int, dpo: int, round_no: int, mode: str) -> tuple[range, range]:
    """Index ranges of RFT's and DPO's training problems in round `round_no`.

    Round 1 (and every round with mode "all") takes RFT's problems first and DPO's right
    after them, or DPO's from the start again when there are too few for both. With mode
    "fresh" round r starts after the (r-1) x (rft + dpo) problems earlier rounds used.
    """
    if round_no < 1:
        raise RoundError(f"round numbers start at 1, got {round_no}")
    if mode == "all" or round_no == 1:
        dpo_start = rft if n_train >= rft + dpo else 0
        return range(0, min(rft, n_train)), range(dpo_start, min(dpo_start + dpo, n_train))
    if mode != "fresh":
        raise RoundError(f"run.round_problems: expected 'fresh' or 'all', got {mode!r}")
    start, need = (round_no - 1) * (rft + dpo), round_no * (rft + dpo)
    if n_train < need:
        raise RoundError(f"run.round_problems=fresh: round {round_no} needs training problems {start}..{need - 1} "
                         f"(rft.problems={rft} + dpo.problems={dpo} a round), but data.train has {n_train}; "
                         f"raise data.train.limit to at least {need} or set run.round_problems=all")
    return range(start, start + rft), range(start + rft, need)


def critic_start(mode: str, round_no: int, previous_model: str, previous_critic: str | None) -> str:
    """The model a round's critic trains from.

    Round 1: the base model (`previous_model`). Later rounds: round r-1's final model
    ("retrain"), or round r-1's critic ("continue"; the previous model when round r-1 had
    no trained critic).
    """
    if mode not in ("retrain", "continue"):
        raise RoundError(f"run.round_critic: expected 'retrain' or 'continue', got {mode!r}")
    if round_no == 1 or mode == "retrain" or not previous_critic:
        return previous_model
    return previous_critic


def final_model(models: dict[str, tuple[str, str]], start: tuple[str, str]) -> tuple[str, str]:
    """What the next round starts from: this round's DPO model, else its RFT model, else its start."""
    return models.get("dpo") or models.get("rft") or start


def in_mix(key: str, share: float) -> bool:
    """Whether an earlier round's critique is in round r's mix: a fixed share of keys, by hash."""
    return share >= 1 or int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share
