"""The only module that knows DeepSpeed: engine set-up, state checkpoints, HF export."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from core.hardware import bf16_supported, resolve_dtype  # noqa: F401 - re-exported


def zero_stage_for(requested: int, world_size: int) -> int:
    """ZeRO partitions state across ranks; with one rank there is nothing to partition, and
    stage 2 still copies every gradient into its buckets and the weights out of a flat fp32
    copy. Stage 0 (plain data parallelism) then does the same maths with less copying."""
    return 0 if world_size == 1 else requested


def ds_config(*, micro_batch_size: int, grad_accum: int, world_size: int, zero_stage: int, bf16: bool) -> dict:
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch_size * grad_accum * world_size,
        "gradient_clipping": 1.0,
        "bf16": {"enabled": bf16},
        "zero_optimization": {
            "stage": zero_stage,
            # ZeRO-3: gather the full weights on save so rank 0 can write an HF checkpoint.
            **({"stage3_gather_16bit_weights_on_model_save": True} if zero_stage == 3 else {}),
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def init_engine(model: torch.nn.Module, config: dict, lr: float, warmup_steps: int, weight_decay: float = 0.0):
    import deepspeed

    # A torch optimizer keeps DeepSpeed from JIT-building its fused CPU Adam op. torch's fused
    # AdamW (CPU and CUDA) updates all tensors in one kernel per step, as TRL's default does.
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                            weight_decay=weight_decay, betas=(0.9, 0.95), fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (warmup_steps + 1)))
    skip_inference_shm_op()
    engine, opt, _, sched = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched, config=config,
                                                 dist_init_required=False)
    skip_lone_allreduce(engine)
    return engine


def skip_inference_shm_op() -> None:
    """Keep deepspeed.initialize from JIT-compiling its CPU shared-memory all-reduce op.

    DeepSpeed's torch comm backend builds that op at every init, yet only inference_all_reduce
    (tensor-parallel inference) calls it; training reduces through torch.distributed. The build
    was a C++ compile of about a minute on 2 cores in every fresh clone (CI paid it), and a process
    whose ninja hashed build commands differently from the builder's compiled it again.
    The op is built only where deepspeed.ops reports it compatible, so report it not."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__ = {**deepspeed.ops.__compatible_ops__, "deepspeed_shm_comm": False}


def skip_lone_allreduce(engine) -> None:
    """With one data-parallel rank the gradient all-reduce is the identity, yet DeepSpeed still
    flattens every gradient into buckets, reduces and copies them back after each backward
    (ZeRO-0). Turn that pass off; with two or more ranks it stays."""
    if engine.zero_optimization_stage() == 0 and engine.dp_world_size == 1:
        engine.enable_backward_allreduce = False


def save_state(engine, directory: Path) -> None:
    """Collective: every rank writes its own shards (and optimizer state) into directory."""
    engine.save_checkpoint(str(directory), tag="state")


def load_state(engine, directory: Path) -> None:
    path, _ = engine.load_checkpoint(str(directory), tag="state")
    if path is None:
        raise RuntimeError(f"DeepSpeed found no training state under {directory}")


def save_hf(engine, tokenizer, out_dir: Path, rank: int) -> None:
    """Collective under ZeRO-3 (weights are gathered); rank 0 writes the HF directory."""
    module = engine.module
    if engine.zero_optimization_stage() == 3:
        state = engine._zero3_consolidated_16bit_state_dict()  # gathers on all ranks
    else:
        state = module.state_dict()
    if rank == 0:
        out_dir = Path(out_dir)
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        module.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            import shutil

            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
