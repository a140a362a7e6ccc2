"""Offline checks of the cluster configs in cluster/ and the GPU profile in configs/.

Nothing here starts Ray or contacts a cloud: the launcher YAMLs go through Ray's own
JSON-schema validation (plus its offline default-filling), the KubeRay manifests are
checked for the fields the operator needs, and the runtime env for secrets.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
LAUNCHER_FILES = ["aws.yaml", "gcp.yaml"]
GPU_PROFILE = ROOT / "configs" / "gpu-cluster.yaml"

# Pool name -> the worker type / group name used for it in every cluster config.
POOLS = ("sampler", "critic", "learner")
HEX40 = re.compile(r"\b[0-9a-fA-F]{40}\b")
# Env var names that hold credentials: a whole name part, so TOKENIZERS_PARALLELISM is fine.
SECRET_NAME = re.compile(r"(^|_)(API_KEY|KEY|TOKEN|SECRET|PASSWORD|CREDENTIALS?)(_|$)", re.IGNORECASE)


def _load(path: Path):
    return yaml.safe_load(path.read_text())


def _strings(obj):
    """Every string value (and key) in a parsed YAML tree."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def _profile_demand() -> dict[str, tuple[float, float]]:
    """Custom resource -> (units the GPU profile asks for in total, GPUs per unit)."""
    from core.config import load_config

    r = load_config(GPU_PROFILE).resources
    demand: dict[str, tuple[float, float]] = {}
    for pool in (r.samplers, r.critics):
        for name, amount in pool.custom_resources.items():
            demand[name] = (amount * pool.num_actors, pool.num_gpus / amount)
    for name, amount in r.learner_resources.items():
        demand[name] = (amount * r.learner_workers, r.learner_gpus / amount)
    for name, amount in r.buffer_resources.items():
        demand[name] = (amount, 0.0)
    return demand


# ------------------------------------------------------------------ cluster launcher


@pytest.fixture(scope="module")
def ray_util():
    from ray.autoscaler._private import util

    return util


@pytest.fixture(params=LAUNCHER_FILES, scope="module")
def launcher(request):
    return request.param, _load(CLUSTER / request.param)


def test_launcher_passes_rays_schema(launcher, ray_util):
    name, cfg = launcher
    ray_util.validate_config(copy.deepcopy(cfg))
    # Ray's own offline preparation: merge with the provider's defaults.yaml, merge the
    # setup commands, validate the docker section, fill per-type worker bounds.
    prepared = ray_util.prepare_config(copy.deepcopy(cfg))
    ray_util.validate_config(prepared)
    assert prepared["provider"]["type"] == name.split(".")[0]


def test_launcher_schema_rejects_string_max_workers(launcher, ray_util):
    import jsonschema

    _, cfg = launcher
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["sampler_gpu"]["max_workers"] = "4"
    with pytest.raises(jsonschema.ValidationError):
        ray_util.validate_config(bad)
    assert isinstance(cfg["available_node_types"]["sampler_gpu"]["max_workers"], int)  # copy only


def test_launcher_rejects_unknown_head_type(launcher, ray_util):
    _, cfg = launcher
    bad = copy.deepcopy(cfg)
    bad["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError):
        ray_util.validate_config(bad)


def test_launcher_top_level_fields(launcher):
    _, cfg = launcher
    for key in ("cluster_name", "max_workers", "upscaling_speed", "idle_timeout_minutes", "provider",
                "auth", "available_node_types", "head_node_type", "file_mounts", "setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in cfg, key
    assert cfg["upscaling_speed"] > 0 and cfg["idle_timeout_minutes"] > 0


def test_launcher_head_is_cpu_only(launcher):
    _, cfg = launcher
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"].get("GPU") == 0, "the head must advertise GPU: 0"
    assert head["resources"].get("CPU", 0) >= 1
    for pool in POOLS:
        assert f"{pool}_node" not in head["resources"]


def test_launcher_gpu_worker_types(launcher):
    _, cfg = launcher
    types = cfg["available_node_types"]
    total_max = 0
    for pool in POOLS:
        t = types[f"{pool}_gpu"]
        lo, hi = t.get("min_workers", 0), t["max_workers"]
        assert isinstance(lo, int) and isinstance(hi, int)
        assert 0 <= lo <= hi, f"{pool}_gpu: min_workers {lo} > max_workers {hi}"
        res = t["resources"]
        assert res.get("GPU", 0) >= 1, f"{pool}_gpu advertises no GPUs"
        # One unit of the pool's marker resource per GPU: a pool actor asks for 1 unit.
        assert res.get(f"{pool}_node") == res["GPU"], f"{pool}_gpu: {pool}_node should equal GPU"
        total_max += hi
    assert total_max <= cfg["max_workers"]


def test_launcher_installs_gpu_extra(launcher):
    _, cfg = launcher
    cmds = cfg.get("setup_commands", []) + cfg.get("worker_setup_commands", [])
    for t in cfg["available_node_types"].values():
        cmds += t.get("worker_setup_commands", [])
    assert any("pip install" in c and ".[gpu]" in c for c in cmds), "no setup command installs the [gpu] extra"
    # Everything installs the same way: the GPU extra must be in the shared list.
    assert any("pip install" in c and ".[gpu]" in c for c in cfg["setup_commands"])


def test_launcher_dashboard_on_loopback_and_token_auth(launcher):
    _, cfg = launcher
    head_cmds = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_cmds
    assert "0.0.0.0" not in head_cmds
    assert "RAY_AUTH_MODE=token" in head_cmds
    assert "RAY_AUTH_MODE=token" in " ".join(cfg["worker_start_ray_commands"])
    # The token is synced from the user's machine, never written into the config.
    assert any(k.endswith(".ray/auth_token") for k in cfg["file_mounts"])


def test_launcher_excludes_local_state(launcher):
    _, cfg = launcher
    assert ".venv" in cfg["rsync_exclude"]
    assert "runs" in cfg["rsync_exclude"]


def test_launcher_capacity_covers_gpu_profile(launcher):
    """Every custom resource the GPU profile asks for exists, with enough units and GPUs."""
    _, cfg = launcher
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    for name, (units, gpus_per_unit) in _profile_demand().items():
        supply = head["resources"].get(name, 0)
        gpus = 0
        for tname, t in types.items():
            if tname == cfg["head_node_type"] or name not in t["resources"]:
                continue
            supply += t["resources"][name] * t["max_workers"]
            gpus_on_node = t["resources"].get("GPU", 0)
            assert gpus_on_node >= t["resources"][name] * gpus_per_unit, (tname, name)
            gpus += gpus_on_node * t["max_workers"]
        assert supply >= units, f"{name}: profile needs {units}, cluster offers at most {supply}"
        if gpus_per_unit:
            assert gpus >= units * gpus_per_unit


# ------------------------------------------------------------------ KubeRay


def _kuberay_docs(fname: str) -> list[dict]:
    docs = [d for d in yaml.safe_load_all((CLUSTER / "kuberay" / fname).read_text()) if d]
    assert docs, fname
    for d in docs:
        assert d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), d
    return docs


def _one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    assert found[0]["apiVersion"] == "ray.io/v1"
    return found[0]


def _parse_custom_resources(params: dict) -> dict:
    from pipelines.plan import parse_ray_start_resources

    raw = params.get("resources")
    # KubeRay passes the value to `ray start --resources=...` verbatim: a quoted JSON map.
    assert raw is None or (raw.startswith('"') and raw.endswith('"')), raw
    return parse_ray_start_resources(raw)


def _check_ray_cluster_spec(spec: dict) -> None:
    assert spec["enableInTreeAutoscaling"] is True
    assert isinstance(spec.get("autoscalerOptions"), dict)
    assert spec.get("authOptions", {}).get("mode") == "token"

    head = spec["headGroupSpec"]
    params = head["rayStartParams"]
    assert isinstance(params, dict)
    assert all(isinstance(v, str) for v in params.values()), "rayStartParams values must be strings"
    assert params.get("num-gpus") == "0"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    head_c = head["template"]["spec"]["containers"][0]
    assert head_c["image"]
    assert "nvidia.com/gpu" not in head_c.get("resources", {}).get("limits", {})

    groups = spec["workerGroupSpecs"]
    names = [g["groupName"] for g in groups]
    assert len(set(names)) == len(names)
    assert set(POOLS) <= set(names)
    images = {head_c["image"]}
    for g in groups:
        assert g["groupName"]
        lo, hi = g["minReplicas"], g["maxReplicas"]
        assert isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi, g["groupName"]
        assert lo <= g.get("replicas", lo) <= hi
        gp = g["rayStartParams"]
        assert isinstance(gp, dict) and all(isinstance(v, str) for v in gp.values())
        c = g["template"]["spec"]["containers"][0]
        assert c["image"]
        images.add(c["image"])
        limits = c["resources"]["limits"]
        gpus = int(limits["nvidia.com/gpu"])
        assert gpus >= 1, g["groupName"]
        # Kubernetes requires extended-resource requests to equal limits.
        assert int(c["resources"].get("requests", {}).get("nvidia.com/gpu", gpus)) == gpus
        custom = _parse_custom_resources(gp)
        assert custom.get(f"{g['groupName']}_node") == gpus, g["groupName"]
    assert len(images) == 1, f"all Ray containers should run the same image: {images}"

    # W&B key only ever by reference to a Secret.
    for c in [head_c] + [g["template"]["spec"]["containers"][0] for g in groups]:
        for env in c.get("env", []):
            if SECRET_NAME.search(env["name"]):
                assert "value" not in env and "secretKeyRef" in env.get("valueFrom", {}), env["name"]


def _check_capacity(spec: dict) -> None:
    head_custom = _parse_custom_resources(spec["headGroupSpec"]["rayStartParams"])
    for name, (units, gpus_per_unit) in _profile_demand().items():
        supply = head_custom.get(name, 0)
        for g in spec["workerGroupSpecs"]:
            per_pod = _parse_custom_resources(g["rayStartParams"]).get(name, 0)
            if per_pod:
                gpus = int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
                assert gpus >= per_pod * gpus_per_unit, (g["groupName"], name)
            supply += per_pod * g["maxReplicas"]
        assert supply >= units, f"{name}: profile needs {units}, cluster offers at most {supply}"


def test_raycluster_manifest():
    rc = _one(_kuberay_docs("raycluster.yaml"), "RayCluster")
    _check_ray_cluster_spec(rc["spec"])
    _check_capacity(rc["spec"])


def test_rayjob_manifest():
    rj = _one(_kuberay_docs("rayjob.yaml"), "RayJob")
    spec = rj["spec"]
    assert "python -m pipelines.self_critique" in spec["entrypoint"]
    assert "--config configs/gpu-cluster.yaml" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(env, dict)
    assert ".venv" in env.get("excludes", [])
    assert not any(SECRET_NAME.search(k) for k in env.get("env_vars", {}))
    _check_ray_cluster_spec(spec["rayClusterSpec"])
    _check_capacity(spec["rayClusterSpec"])


def test_kuberay_pvcs_match():
    """Both manifests mount the same RWX claim that they define."""
    for fname in ("raycluster.yaml", "rayjob.yaml"):
        docs = _kuberay_docs(fname)
        pvcs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
        for name, pvc in pvcs.items():
            assert "ReadWriteMany" in pvc["spec"]["accessModes"], name
        text = (CLUSTER / "kuberay" / fname).read_text()
        for claim in re.findall(r"claimName:\s*([\w-]+)", text):
            assert claim in pvcs, f"{fname}: claim {claim} is not defined"


def _cluster_specs() -> list[tuple[str, dict]]:
    rc = _one(_kuberay_docs("raycluster.yaml"), "RayCluster")["spec"]
    rj = _one(_kuberay_docs("rayjob.yaml"), "RayJob")["spec"]
    return [("raycluster.yaml", rc), ("rayjob.yaml", rj["rayClusterSpec"])]


def _pods(spec: dict) -> list[tuple[str, dict]]:
    return [("head", spec["headGroupSpec"]["template"]["spec"])] + \
        [(g["groupName"], g["template"]["spec"]) for g in spec["workerGroupSpecs"]]


def _mentions_wandb_secret(pod: dict) -> bool:
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        for env in c.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef", {})
            if env["name"] == "WANDB_API_KEY" or ref.get("name") == "wandb-api-key":
                return True
        for src in c.get("envFrom", []):
            if src.get("secretRef", {}).get("name") == "wandb-api-key":
                return True
    return any(v.get("secret", {}).get("secretName") == "wandb-api-key" for v in pod.get("volumes", []))


@pytest.mark.parametrize("fname,spec", _cluster_specs(), ids=lambda x: x if isinstance(x, str) else "")
def test_wandb_key_reaches_only_the_driver_pod(fname, spec):
    """The driver runs on the head; no worker pod (sampler, critic, learner code) gets the key."""
    pods = dict(_pods(spec))
    assert _mentions_wandb_secret(pods.pop("head")), f"{fname}: the head (driver) should get the W&B key"
    for name, pod in pods.items():
        assert not _mentions_wandb_secret(pod), f"{fname}: worker group {name} gets the W&B key"


def test_rayjob_driver_stays_on_the_head():
    spec = _one(_kuberay_docs("rayjob.yaml"), "RayJob")["spec"]
    # entrypoint resources would let Ray place the driver on a worker pod, which has no key
    for key in ("entrypointNumCpus", "entrypointNumGpus", "entrypointResources"):
        assert key not in spec, key
    assert not _mentions_wandb_secret(spec.get("submitterPodTemplate", {}).get("spec", {}))
    env = yaml.safe_load(spec["runtimeEnvYAML"]).get("env_vars", {})
    assert "WANDB_API_KEY" not in env  # runtime_env vars reach every worker process


# ------------------------------------------------------------------ shared run directory permissions

CHMOD = re.compile(r"chmod\s+(?:-R\s+)?(\S+)\s+(\S+)")


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in CLUSTER.rglob("*.yaml")))
def test_nothing_is_made_world_writable(path):
    text = (ROOT / path).read_text()
    for mode, target in CHMOD.findall(text):
        if re.fullmatch(r"[0-7]{3,4}", mode):
            assert int(mode[-1]) & 2 == 0, f"{path}: chmod {mode} {target} lets everyone write"
        else:
            assert not re.search(r"[oa]\+\w*w|^\+\w*w", mode), f"{path}: chmod {mode} {target}"


def test_launchers_give_the_shared_dir_group_permissions(launcher):
    name, cfg = launcher
    cmds = " ; ".join(cfg["initialization_commands"])
    modes = [m for m, target in CHMOD.findall(cmds) if target.rstrip(";") == "/mnt/shared"]
    assert modes, f"{name}: no chmod of /mnt/shared"
    for mode in modes:
        assert re.fullmatch(r"[0-7]?7[0-7]0", mode), f"{name}: /mnt/shared mode {mode} (want group rwx, others none)"
    assert re.search(r"chown \d+:\d+ /mnt/shared", cmds), f"{name}: /mnt/shared needs an owner and group"


@pytest.mark.parametrize("fname,spec", _cluster_specs(), ids=lambda x: x if isinstance(x, str) else "")
def test_kuberay_pods_share_the_run_dir_through_a_group(fname, spec):
    groups = {pod.get("securityContext", {}).get("fsGroup") for _, pod in _pods(spec)}
    assert len(groups) == 1 and None not in groups, f"{fname}: every pod needs the same fsGroup, got {groups}"


def test_security_doc_says_what_the_shared_filesystem_is_trusted_with():
    text = (ROOT / "docs" / "security.md").read_text()
    section = text.split("## The shared file system", 1)
    assert len(section) == 2, "docs/security.md needs a '## The shared file system' section"
    body = section[1].split("\n## ", 1)[0]
    for needed in ("run_dir", "torch.load", "safetensors", "world-writable"):
        assert needed in body, f"the shared file system section does not mention {needed}"


# ------------------------------------------------------------------ runtime env


def test_runtime_env_parses_and_excludes():
    env = _load(CLUSTER / "runtime_env.yaml")
    assert isinstance(env, dict)
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**env, working_dir=".")  # Ray's own field validation; starts nothing
    for item in (".venv", ".cache", "runs", "wandb", ".git"):
        assert item in env["excludes"], item
    assert env["env_vars"]["TOKENIZERS_PARALLELISM"] == "false"
    assert env["env_vars"].get("WANDB_PROJECT")


def test_runtime_env_has_no_secrets():
    env = _load(CLUSTER / "runtime_env.yaml")
    assert "WANDB_API_KEY" not in env.get("env_vars", {})
    for k in env.get("env_vars", {}):
        assert not SECRET_NAME.search(k), f"secret-looking env var {k!r} in runtime_env.yaml"
    for s in _strings(env):
        assert not HEX40.search(s), "40-hex key-looking value in runtime_env.yaml"


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in
                                        list(CLUSTER.rglob("*.yaml")) + [GPU_PROFILE]))
def test_no_key_looking_strings_anywhere(path):
    text = (ROOT / path).read_text()
    assert not HEX40.search(text), f"{path}: contains a 40-hex key-looking string"
    assert not re.search(r"WANDB_API_KEY\s*[:=]\s*['\"]?\w{8,}", text), f"{path}: inline W&B key"


# ------------------------------------------------------------------ GPU profile


def test_gpu_profile_validates():
    from core.config import load_config

    cfg = load_config(GPU_PROFILE)
    assert "/" in cfg.model.name  # a hub id
    assert cfg.data.train.kind == "gsm8k" and cfg.data.train.path == "openai/gsm8k"
    assert cfg.data.train.config == cfg.data.test.config == "main"  # the hub set has no default config
    assert cfg.data.train.split == "train" and cfg.data.test.split == "test"
    assert cfg.resources.samplers.num_gpus == 1 and cfg.resources.critics.num_gpus == 1
    assert cfg.resources.learner_workers == 4 and cfg.resources.learner_gpus == 1
    assert cfg.sampling.n == 8 and cfg.dpo.beta == 0.5 and cfg.dpo.nll_coef == 1.0
    assert cfg.logging.wandb is True
    assert cfg.run.run_dir.startswith("/mnt/shared/"), "run_dir must be on the clusters' shared mount"
