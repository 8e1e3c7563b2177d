"""The container image, the compose stack and the Kubernetes manifests, checked without running
them (no Docker engine or cluster here): hadolint, the compose specification's JSON schema, and
`kubectl kustomize` rendered through Kubernetes' own OpenAPI schemas."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.ci import require

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S_VERSION = "1.33"
# Custom resources: no schema for them ships with kubernetes-validate; they are checked for
# their apiVersion and kind only, and no other kind may be skipped.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
}
INFERENCE_POOL_KINDS = {
    ("inference.networking.k8s.io/v1", "InferencePool"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
}


def tool(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    path = str(found) if found.exists() else shutil.which(name)
    require(path is not None, f"{name} (a dev dependency: make install)")
    assert path is not None
    return path


def run(*command: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def stages(dockerfile: str) -> dict[str, str]:
    """Each named stage's instructions."""
    parts = re.split(r"^FROM \S+ AS (\S+)\s*$", dockerfile, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_dockerfile_passes_hadolint_and_keeps_its_promises() -> None:
    result = run(tool("hadolint"), "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr

    found = stages((REPO / "Dockerfile").read_text())
    assert {"build-cpu", "cpu", "build-cuda", "cuda"} <= set(found)
    assert "nvidia/cuda" in (REPO / "Dockerfile").read_text()
    for final in ("cpu", "cuda"):
        text = found[final]
        assert "USER 10001:10001" in text  # not root
        assert "HEALTHCHECK" in text and "/healthz" in text
        assert 'ENTRYPOINT ["openft"]' in text
        assert "COPY --from=build-" in text  # only the built environment comes along
        assert not re.search(r"\b(gcc|g\+\+|build-essential|pip install)\b", text)


def test_hadolint_does_fail_on_a_bad_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM python:latest\nRUN cd /tmp && pip install x\n")

    assert run(tool("hadolint"), "Dockerfile", cwd=tmp_path).returncode != 0


def check_compose(*files: Path) -> subprocess.CompletedProcess[str]:
    schema = ("--builtin-schema", "vendor.compose-spec")
    return run(tool("check-jsonschema"), *schema, *map(str, files))


def test_the_compose_files_follow_the_compose_specification(tmp_path: Path) -> None:
    result = check_compose(DEPLOY / "compose.yaml", DEPLOY / "compose.gpu.yaml")
    assert result.returncode == 0, result.stdout + result.stderr

    broken = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    broken["services"]["api"]["restart_policy"] = "always"  # not a compose key
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    assert check_compose(tmp_path / "compose.yaml").returncode != 0


def test_the_compose_stack_has_every_part_and_takes_its_secrets_from_one_env_file() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    parts = {"api", "worker", "vllm-0", "vllm-1", "postgres", "minio", "prometheus", "grafana"}
    assert parts <= set(services)
    assert services["api"]["command"][0] == "api" and services["worker"]["command"] == ["worker"]
    for replica in ("vllm-0", "vllm-1"):  # two replicas, no shared adapters folder
        assert any(arg.startswith("--api-key=") for arg in services[replica]["command"])
        assert "openft-data:/var/lib/openft:ro" in services[replica]["volumes"]
    urls = json.loads(services["api"]["environment"]["OPENFT_VLLM_URLS"])["tiny-chat"]
    assert urls == ["http://vllm-0:8001", "http://vllm-1:8001"]

    example = (DEPLOY / ".env.example").read_text()
    defined = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    used |= {s["environment"] for s in compose["secrets"].values() if "environment" in s}
    assert used and used <= defined, used - defined
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
    config = services["prometheus"]["command"][0].split("=", 1)[1]
    assert (DEPLOY / "prometheus" / Path(config).name).exists()


def rendered(overlay: str) -> list[dict[str, Any]]:
    result = run(tool("kubectl"), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validate(doc: dict[str, Any]) -> bool:
    """Validate a manifest; False when it is a custom resource (skipped, see CUSTOM_KINDS)."""
    if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS | INFERENCE_POOL_KINDS:
        return False
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    return True


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_the_kubernetes_overlays_render_and_validate(overlay: str) -> None:
    docs = rendered(overlay)

    skipped = {(d["apiVersion"], d["kind"]) for d in docs if not validate(d)}
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert {("Deployment", n) for n in ("openft-api", "openft-worker")} <= set(by_name)
    assert ("StatefulSet", "openft-vllm") in by_name
    assert {("HorizontalPodAutoscaler", "openft-api"), ("NetworkPolicy", "openft-vllm")} <= set(
        by_name
    )
    assert ("ServiceMonitor", "openft-api") in by_name
    policy = by_name[("NetworkPolicy", "openft-vllm")]["spec"]["ingress"][0]["from"]
    assert policy[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    replicas = by_name[("StatefulSet", "openft-vllm")]["spec"]
    vllm = replicas["template"]["spec"]["containers"][0]
    assert "--api-key=$(OPENFT_VLLM_API_KEY)" in vllm["args"]
    # Two replicas behind a headless Service the gateway resolves into its pods, each pulling
    # adapters into a volume of its own.
    assert (
        replicas["replicas"] == 2
        and by_name[("Service", "openft-vllm")]["spec"]["clusterIP"] == "None"
    )
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    urls = json.loads(config["OPENFT_VLLM_URLS"])["tiny-chat"]
    assert urls == ["dns+http://openft-vllm:8001"]
    assert config["OPENFT_VLLM_ADAPTERS_FROM_BLOBS"] == "true"
    mounts = {m["mountPath"]: m for m in vllm["volumeMounts"]}
    assert mounts["/var/lib/openft"].get("readOnly") is True
    worker = by_name[("Deployment", "openft-worker")]["spec"]["template"]["spec"]["containers"][0]
    gpus = worker["resources"].get("limits", {}).get("nvidia.com/gpu")
    if overlay == "gpu":
        assert gpus == 1 and vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert ("ScaledObject", "openft-worker") in by_name
        assert skipped == CUSTOM_KINDS
    else:
        assert gpus is None and vllm["image"].endswith(":cpu")
        assert skipped == {k for k in CUSTOM_KINDS if k[1] == "ServiceMonitor"}


def test_the_inference_pool_overlay_routes_vllm_through_the_inference_gateway() -> None:
    docs = rendered("inference-pool")

    skipped = {(d["apiVersion"], d["kind"]) for d in docs if not validate(d)}
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert skipped == CUSTOM_KINDS | INFERENCE_POOL_KINDS
    vllm = by_name[("StatefulSet", "openft-vllm")]["spec"]["template"]
    pool = by_name[("InferencePool", "openft-vllm")]["spec"]
    assert pool["selector"]["matchLabels"] == vllm["metadata"]["labels"]
    assert pool["targetPorts"] == [{"number": 8001}]
    route = by_name[("HTTPRoute", "openft-vllm")]["spec"]["rules"][0]["backendRefs"][0]
    assert (route["kind"], route["name"]) == ("InferencePool", "openft-vllm")
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert json.loads(config["OPENFT_VLLM_URLS"]) == {"tiny-chat": "http://inference-gateway"}
    assert config["OPENFT_VLLM_ADAPTERS_FROM_BLOBS"] == "true"  # pods still pull adapters
    allowed = by_name[("NetworkPolicy", "openft-vllm")]["spec"]["ingress"][0]["from"]
    assert any("inferencepool" in p.get("podSelector", {}).get("matchLabels", {}) for p in allowed)


def test_strict_validation_catches_a_misspelt_field() -> None:
    deployment = next(d for d in rendered("cpu") if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"

    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def production_setup() -> str:
    """The shell block of README's "Production setup" section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Production setup", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def references_to(secret: str, node: Any) -> set[str]:
    """The keys of ``secret`` a manifest reads (env, ServiceMonitor, KEDA)."""
    found: set[str] = set()
    if isinstance(node, dict):
        if node.get("name") == secret and "key" in node:
            found.add(node["key"])
        for value in node.values():
            found |= references_to(secret, value)
    elif isinstance(node, list):
        for value in node:
            found |= references_to(secret, value)
    return found


def test_the_readmes_secret_holds_every_key_the_manifests_read(tmp_path: Path) -> None:
    block = production_setup()
    env_file = block.split("cat > openft.env <<'ENV'\n", 1)[1].split("\nENV\n", 1)[0]
    (tmp_path / "openft.env").write_text(env_file + "\n")
    create = "kubectl create secret generic openft-secrets --from-env-file=openft.env"
    assert create in block and "kubectl kustomize deploy/k8s/overlays/gpu" in block

    result = run(
        tool("kubectl"), *create.split()[1:], "--dry-run=client", "-o", "yaml", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    secret = yaml.safe_load(result.stdout)
    assert validate(secret)

    needed = references_to("openft-secrets", rendered("gpu"))
    assert {"OPENFT_VLLM_API_KEY", "OPENFT_METRICS_TOKEN", "KEDA_POSTGRES_CONNECTION"} <= needed
    # The pods also read the whole secret as settings (envFrom): the database and S3.
    needed |= {"OPENFT_DATABASE_URL", "OPENFT_S3_ACCESS_KEY_ID", "OPENFT_S3_SECRET_ACCESS_KEY"}
    assert needed <= set(secret["data"]), needed - set(secret["data"])
