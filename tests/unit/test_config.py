"""Typed config: shipped profiles, defaults, dotted overrides, and loud errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core.config import Config, ConfigError, load_config, parse_override

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


def _leaves(tree: dict, prefix: str = ""):
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from _leaves(v, key + ".")
        else:
            yield key, v


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


@pytest.mark.parametrize("name", ["cpu-demo.yaml", "gpu-cluster.yaml"])
def test_shipped_config_loads_and_keeps_every_value(name):
    path = CONFIGS / name
    if not path.is_file():
        pytest.skip(f"{path} does not exist yet")
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    raw = yaml.safe_load(path.read_text())
    for key, value in _leaves(raw):
        got = _get(cfg, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert got == pytest.approx(value), key
        else:
            assert got == value, key


def test_defaults():
    cfg = load_config()
    assert cfg == load_config(None, [])
    assert cfg.data.train.kind == "generated" and cfg.data.test.split == "test"
    assert cfg.data.on_bad_row == "error"
    assert cfg.run.stages == ["critic", "rft", "dpo", "eval"]
    # defaults are themselves valid values (round trip through validation)
    assert Config.model_validate(cfg.model_dump()) == cfg


def test_dotted_overrides():
    base = load_config()
    cfg = load_config(None, ["rft.lr=1e-5", "resources.samplers.num_actors=2", "run.stages=[rft, eval]",
                             "logging.wandb=false", "data.train.columns={question: prompt}", "--sampling.n=4"])
    assert cfg.rft.lr == pytest.approx(1e-5) and isinstance(cfg.rft.lr, float)
    assert cfg.resources.samplers.num_actors == 2
    assert cfg.resources.critics.num_actors == base.resources.critics.num_actors  # siblings untouched
    assert cfg.run.stages == ["rft", "eval"]
    assert cfg.logging.wandb is False
    assert cfg.data.train.columns == {"question": "prompt"}
    assert cfg.sampling.n == 4
    assert cfg.rft.epochs == base.rft.epochs


def test_overrides_apply_on_top_of_a_file_in_order(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("rft:\n  lr: 3.0e-5\n  epochs: 3\nsampling:\n  n: 4\n")
    cfg = load_config(p, ["rft.lr=1e-6", "sampling.n=2", "sampling.n=6"])
    assert cfg.rft.lr == pytest.approx(1e-6) and cfg.rft.epochs == 3 and cfg.sampling.n == 6


@pytest.mark.parametrize(
    "yaml_text,dotted",
    [
        ("rtf:\n  lr: 1.0e-5\n", "rtf"),
        ("rft:\n  lrr: 1.0e-5\n", "rft.lrr"),
        ("resources:\n  samplers:\n    num_actor: 2\n", "resources.samplers.num_actor"),
        ("data:\n  train:\n    knd: gsm8k\n", "data.train.knd"),
    ],
    ids=["section", "key", "nested-key", "dataset-key"],
)
def test_misspelled_keys_name_the_dotted_key(tmp_path, yaml_text, dotted):
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    msg = str(ei.value)
    assert f"{dotted}: unknown key" in msg and str(p) in msg


@pytest.mark.parametrize("override,dotted", [("rtf.lr=1", "rtf"), ("resources.samplers.num_actor=2",
                                                                    "resources.samplers.num_actor")])
def test_misspelled_override_names_the_dotted_key(override, dotted):
    with pytest.raises(ConfigError, match=rf"{dotted}: unknown key"):
        load_config(None, [override])


def test_all_errors_reported_at_once(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("rft:\n  lrr: 1\nsampling:\n  temperature: -1\n")
    msg = str(pytest.raises(ConfigError, load_config, p).value)
    assert "rft.lrr" in msg and "sampling.temperature" in msg


@pytest.mark.parametrize(
    "override,dotted",
    [
        ("sampling.temperature=-1", "sampling.temperature"),
        ("sampling.top_p=0", "sampling.top_p"),
        ("sampling.n=0", "sampling.n"),
        ("sampling.n=65", "sampling.n"),
        ("sampling.n=1.5", "sampling.n"),
        ("rft.samples_per_prompt=0", "rft.samples_per_prompt"),
        ("rft.lr=0", "rft.lr"),
        ("rft.lr=abc", "rft.lr"),
        ("dpo.samples_per_prompt=1", "dpo.samples_per_prompt"),
        ("dpo.label_smoothing=0.5", "dpo.label_smoothing"),
        ("critic.keep_threshold=11", "critic.keep_threshold"),
        ("critic.policy=majority", "critic.policy"),
        ("critic.heldout_fraction=1", "critic.heldout_fraction"),
        ("data.train.kind=csv", "data.train.kind"),
        ("data.train.limit=0", "data.train.limit"),
        ("data.on_bad_row=ignore", "data.on_bad_row"),
        ("train.zero_stage=1", "train.zero_stage"),
        ("run.stages=[rft, sft]", "run.stages.1"),
        ("logging.wandb=maybe", "logging.wandb"),
        ("resources.samplers.num_actors=0", "resources.samplers.num_actors"),
        ("model.max_model_len=10", "model.max_model_len"),
    ],
)
def test_out_of_range_values_name_the_key(override, dotted):
    with pytest.raises(ConfigError) as ei:
        load_config(None, [override])
    assert f"  {dotted}: " in str(ei.value), str(ei.value)


def test_tensor_parallel_needs_gpus():
    with pytest.raises(ConfigError, match=r"resources.samplers: tensor_parallel_size=2 needs num_gpus >= 2"):
        load_config(None, ["resources.samplers.num_gpus=1", "resources.samplers.tensor_parallel_size=2"])
    cfg = load_config(None, ["resources.samplers.num_gpus=2", "resources.samplers.tensor_parallel_size=2"])
    assert cfg.resources.samplers.tensor_parallel_size == 2


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("rft.lr", "expected KEY=VALUE"),
        ("=3", "empty key"),
        ("rft..lr=3", "empty part"),
        (".rft.lr=3", "empty part"),
        ("rft.lr.=3", "empty part"),
        ("rft.lr=[1", "not valid YAML"),
        ("run.stages={a: [", "not valid YAML"),
    ],
)
def test_bad_override_syntax(override, fragment):
    with pytest.raises(ConfigError) as ei:
        load_config(None, [override])
    assert fragment in str(ei.value) and override in str(ei.value)


def test_override_into_a_value_is_an_error():
    with pytest.raises(ConfigError) as ei:
        load_config(None, ["rft.lr=1e-5", "rft.lr.x=1"])
    assert "rft.lr" in str(ei.value)


def test_parse_override_values_are_yaml():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a.b=hello world") == ("a.b", "hello world")
    assert parse_override("a.b=x=y") == ("a.b", "x=y")
    assert parse_override("a.b=") == ("a.b", "")
    assert parse_override(" --a.b = true") == ("a.b", True)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_yaml(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(p)


def test_section_that_is_not_a_mapping(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("rft: 5\n")
    with pytest.raises(ConfigError, match=r"  rft: "):
        load_config(p)


def test_invalid_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("rft:\n  lr: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_empty_yaml_is_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("# nothing\n")
    assert load_config(p) == load_config()


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path)  # a directory is not a config file
