"""The cluster manifests: stock rayproject/ray images with liveobject installed by Ray's
runtime_env (one pinned, hashed requirement everywhere), one deployer of the Serve apps, Serve
configs that Ray's own schema accepts, the store pinned to the node holding its volume, the
dashboard reachable by the KubeRay operator only (a NetworkPolicy), unprivileged containers, and
secrets as mounted files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from pipelines.config import Config, parse_config_text

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "cluster" / "manifests"
STOCK_IMAGE = f"rayproject/ray:{ray.__version__}-py311"
SECRETS = {
    "FRONT_DOOR_PASSWORD": "not-a-real-secret",
    "MQTT_PASSWORD": "not-a-real-secret",
    "LIVEOBJECT_API_KEY": "not-a-real-secret-key",
}


def kuberay() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((MANIFESTS / "kuberay-rayservice.yaml").read_text())
    return {doc["kind"]: doc for doc in docs}


def kuberay_config() -> Config:
    text = kuberay()["ConfigMap"]["data"]["liveobject.yaml"]
    return parse_config_text(text, "liveobject.yaml", env=SECRETS, base_dir="/config")


def containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod_template["spec"]["containers"])


def test_serve_config_validates_with_rays_schema() -> None:
    schema = ServeDeploySchema.model_validate(
        yaml.safe_load((ROOT / "configs/serve.yaml").read_text())
    )
    assert [app.name for app in schema.applications] == ["vlm", "api"]
    assert schema.applications[0].route_prefix is None  # the VLM is not an HTTP route


def test_rayservice_serve_part_validates_and_installs_liveobject() -> None:
    service = kuberay()["RayService"]
    schema = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    config = kuberay_config()
    assert config.ray.runtime_env is not None
    for app in schema.applications:
        assert app.runtime_env["pip"] == config.ray.runtime_env.pip  # the same release
        assert app.args == {"config": "/config/liveobject.yaml"}
        module, _, builder = app.import_path.partition(":")
        assert callable(getattr(__import__(module, fromlist=[builder]), builder))


def test_only_the_rayservice_deploys_the_serve_apps() -> None:
    config = kuberay_config()
    assert config.ray.deploy_serve_apps is False  # `liveobject run` leaves vlm and api alone
    head = kuberay()["RayService"]["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    runs = [c for c in containers(head) if "liveobject run" in " ".join(c.get("args", []))]
    assert len(runs) == 1 and "--config /config/liveobject.yaml" in " ".join(runs[0]["args"])


def test_stock_images_only() -> None:
    text = "\n".join(p.read_text() for p in MANIFESTS.glob("*.yaml"))
    assert "liveobject:latest" not in text
    cluster = kuberay()["RayService"]["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]]
    pods += [group["template"] for group in cluster["workerGroupSpecs"]]
    images = {c["image"] for pod in pods for c in containers(pod)}
    assert images <= {STOCK_IMAGE, f"{STOCK_IMAGE}-gpu"}, images
    launcher = yaml.safe_load((MANIFESTS / "ray-cluster.yaml").read_text())
    assert {launcher["docker"]["image"], launcher["docker"]["worker_image"]} == images
    assert cluster["rayVersion"] == ray.__version__


def test_the_store_is_pinned_to_the_node_with_the_volume() -> None:
    config = kuberay_config()
    assert config.storage.node_resource == "liveobject_store"
    assert config.storage.path == Path("/data")
    cluster = kuberay()["RayService"]["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    assert yaml.safe_load(yaml.safe_load(head["rayStartParams"]["resources"])) == {
        "liveobject_store": 1
    }
    mounts = {m["mountPath"] for c in containers(head["template"]) for m in c["volumeMounts"]}
    assert "/data" in mounts
    for group in cluster["workerGroupSpecs"]:  # the volume is the head's alone
        worker_mounts = [
            m["mountPath"] for c in containers(group["template"]) for m in c["volumeMounts"]
        ]
        assert "/data" not in worker_mounts
        assert "liveobject_store" not in str(group["rayStartParams"])
    launcher = yaml.safe_load((MANIFESTS / "ray-cluster.yaml").read_text())
    assert launcher["available_node_types"]["head"]["resources"]["liveobject_store"] == 1
    assert "liveobject_store" in " ".join(launcher["head_start_ray_commands"])
    assert "/data" in " ".join(launcher["docker"]["head_run_options"])
    assert "/data" not in " ".join(launcher["docker"]["worker_run_options"])


def head_and_workers() -> list[dict[str, Any]]:
    cluster = kuberay()["RayService"]["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]] + [
        group["template"] for group in cluster["workerGroupSpecs"]
    ]


def policies() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((MANIFESTS / "kuberay-rayservice.yaml").read_text())
    return {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}


def test_the_dashboard_is_reachable_by_the_operator_only_and_the_client_port_by_none() -> None:
    """KubeRay deploys serveConfigV2 through the dashboard on the head Service: it must listen
    on the pod's address, and the NetworkPolicy admits to it only the KubeRay operator."""
    head = kuberay()["RayService"]["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    exposed = {p["containerPort"] for c in containers(head["template"]) for p in c.get("ports", [])}
    assert 8265 in exposed and 10001 not in exposed
    rules = policies()["liveobject-ray-head"]
    assert rules["podSelector"]["matchLabels"] == {"ray.io/node-type": "head"}
    assert rules["policyTypes"] == ["Ingress"]
    by_port: dict[int, list[Any]] = {}
    for rule in rules["ingress"]:
        for port in rule.get("ports", []):
            by_port.setdefault(port["port"], []).append(rule.get("from"))
    assert by_port[8265] == [
        [
            {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}},
            }
        ]
    ]
    assert by_port[8000] == [None]  # the API: its own key and Host allowlist
    assert by_port[6379] == [[{"podSelector": {"matchLabels": {"ray.io/is-ray-node": "yes"}}}]]
    for rule in rules["ingress"]:  # no rule admits the client port, even by a range
        for port in rule.get("ports", []):
            assert not port["port"] <= 10001 <= port.get("endPort", port["port"]), rule
        assert rule.get("ports"), "every rule of the head names its ports"
    assert "liveobject-ray-workers" in policies()
    # the launcher config keeps its dashboard on 127.0.0.1 (`ray dashboard` tunnels over SSH)
    launcher = yaml.safe_load((MANIFESTS / "ray-cluster.yaml").read_text())
    start = " ".join(launcher["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start


def test_every_container_runs_unprivileged() -> None:
    for pod in head_and_workers():
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, container["name"]
            assert security["capabilities"] == {"drop": ["ALL"]}, container["name"]
    launcher = yaml.safe_load((MANIFESTS / "ray-cluster.yaml").read_text())
    for options in (
        launcher["docker"]["head_run_options"],
        launcher["docker"]["worker_run_options"],
    ):
        assert {"--cap-drop=ALL", "--security-opt=no-new-privileges"} <= set(options)


def test_package_and_model_are_pinned_the_same_everywhere() -> None:
    """One requirement, a wheel pinned by its sha256, in both apps, ray.runtime_env, the
    sidecar and the launcher; the model pinned by a Hub revision."""
    config = kuberay_config()
    assert config.ray.runtime_env is not None
    (pin,) = config.ray.runtime_env.pip
    assert pin.startswith("liveobject @ https://") and "#sha256=" in pin
    service = kuberay()["RayService"]
    schema = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    assert all(app.runtime_env["pip"] == [pin] for app in schema.applications)
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    (sidecar,) = [c for c in containers(head) if c["name"] == "liveobject"]
    assert f'pip install --quiet "{pin}"' in " ".join(sidecar["args"])
    launcher = yaml.safe_load((MANIFESTS / "ray-cluster.yaml").read_text())
    assert launcher["head_setup_commands"] == [f'pip install --quiet "{pin}"']
    assert "==" not in (MANIFESTS / "kuberay-rayservice.yaml").read_text().split("apiVersion")[1]
    assert config.vlm.revision  # the model's Hub commit


def test_secrets_are_mounted_files_never_environment_values(tmp_path: Path) -> None:
    for pod in head_and_workers():
        spec = pod["spec"]
        (volume,) = [v for v in spec["volumes"] if "secret" in v]
        assert volume["secret"]["secretName"] == "liveobject-secrets"
        for container in spec["containers"]:
            assert "envFrom" not in container, container["name"]
            env = {e["name"]: e for e in container.get("env", [])}
            assert all("valueFrom" not in e for e in env.values()), container["name"]
            mounts = {m["name"]: m for m in container["volumeMounts"]}
            assert mounts[volume["name"]]["readOnly"] is True
            folder = mounts[volume["name"]]["mountPath"]
            assert env["RAY_AUTH_TOKEN_PATH"]["value"] == f"{folder}/RAY_AUTH_TOKEN"
            files = {
                n.removesuffix("_FILE"): e["value"] for n, e in env.items() if n.endswith("_FILE")
            }
            assert files == {name: f"{folder}/{name}" for name in SECRETS}, container["name"]
    # the config parses with the values read from such files
    for name, value in SECRETS.items():
        (tmp_path / name).write_text(value + "\n")
    text = kuberay()["ConfigMap"]["data"]["liveobject.yaml"]
    env = {f"{name}_FILE": str(tmp_path / name) for name in SECRETS}
    config = parse_config_text(text, "liveobject.yaml", env=env, base_dir="/config")
    assert config.api.api_key is not None
    assert config.api.api_key.get_secret_value() == SECRETS["LIVEOBJECT_API_KEY"]


def test_token_auth_on_every_node() -> None:
    cluster = kuberay()["RayService"]["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]]
    pods += [group["template"] for group in cluster["workerGroupSpecs"]]
    for pod in pods:
        for container in containers(pod):
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("RAY_AUTH_MODE") == "token", container["name"]


def test_readme_says_why_the_ports_stay_local() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running on a cluster", 1)[1].split("\n## ", 1)[0]
    assert "kuberay-rayservice.yaml" in section and "ray-cluster.yaml" in section
    assert "runtime_env" in section and "liveobject_store" in section
    assert "dashboard" in section and "10001" in section and "why" in section.lower()
