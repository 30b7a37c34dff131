"""docker/ checked without Docker or Kubernetes (docker/validate.py does the checking).

The Compose and KubeRay schemas are upstream data files kept in shared/schemas beside the
checkout; when that folder is missing these tests fail and say so, they do not pass.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
_spec = importlib.util.spec_from_file_location("docker_validate", DOCKER / "validate.py")
validate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(validate)

SECRET_WORDS = re.compile(r"PASSWORD|TOKEN|SECRET|ACCESS_KEY", re.IGNORECASE)


@pytest.fixture(scope="module")
def schemas() -> Path:
    try:
        return validate.schemas_dir()
    except validate.SchemasMissingError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def compose_schema(schemas) -> dict:
    return json.loads((schemas / validate.COMPOSE_SCHEMA).read_text())


def test_compose_file_is_valid_closed_loopback_and_healthy(compose_schema):
    compose = validate.load_compose()
    assert validate.compose_problems(compose, compose_schema) == []
    services = compose["services"]
    assert {"postgres", "mlflow", "ray-head", "ray-worker", "ray-worker-gpu"} <= set(services)
    assert services["ray-worker-gpu"]["profiles"] == ["gpu"]
    assert services["minio"]["profiles"] == ["s3"]
    assert services["ray-head"]["environment"]["RAY_NUM_CPUS"] == "0"
    gpus = services["ray-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpus[0]["capabilities"] == ["gpu"]


def test_compose_checks_find_each_kind_of_problem(compose_schema):
    broken = copy.deepcopy(validate.load_compose())
    mlflow = broken["services"]["mlflow"]
    mlflow["ports"] = ["5000:5000"]  # every interface of the host
    mlflow["secrets"].append("not_defined")
    mlflow["volumes"].append("no-such-volume:/data")
    mlflow["depends_on"]["ghost"] = {"condition": "service_started"}
    del broken["services"]["postgres"]["healthcheck"]
    broken["services"]["ray-head"]["shm"] = "8gb"  # not a Compose key
    broken["volumes"]["orphan"] = None
    problems = "\n".join(validate.compose_problems(broken, compose_schema))
    for expected in (
        "mlflow publishes '5000:5000', which is not bound to 127.0.0.1",
        "mlflow uses the undefined secret not_defined",
        "mlflow uses the undefined volume no-such-volume",
        "mlflow depends on the undefined service ghost",
        "postgres runs for good but has no health check",
        "services/ray-head: 'shm' does not match",
        "the volume orphan is defined but unused",
    ):
        assert expected in problems


def test_compose_defaults_are_what_unset_variables_give():
    assert validate.interpolate("${RIGL_BIND:-127.0.0.1}:${PORT-5000}:5000") == (
        "127.0.0.1:5000:5000"
    )
    assert validate.interpolate({"a": ["${UNSET}", "$$(cat f)"]}) == {"a": ["", "$(cat f)"]}


def test_kuberay_manifests_match_the_crds(schemas):
    assert validate.kuberay_problems(schemas) == []
    kinds = {doc["kind"]: doc for _, doc in validate.manifests()}
    cluster = kinds["RayCluster"]["spec"]
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (gpu,) = cluster["workerGroupSpecs"]
    (container,) = gpu["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    entrypoints = [
        d["spec"]["entrypoint"] for _, d in validate.manifests() if d["kind"] == "RayJob"
    ]
    assert any(" sweep " in e and "--sweep-id " in e for e in entrypoints)
    assert any(" rerun " in e for e in entrypoints)


def test_kuberay_check_finds_a_manifest_off_the_schema(schemas, tmp_path):
    cluster = next(d for _, d in validate.manifests() if d["kind"] == "RayCluster")
    cluster = copy.deepcopy(cluster)
    cluster["spec"]["authOptions"]["mode"] = "password"
    cluster["spec"]["workerGroupSpecs"][0].pop("groupName")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cluster))
    problems = "\n".join(validate.kuberay_problems(schemas, tmp_path))
    assert "spec/authOptions/mode: 'password' is not one of ['disabled', 'token']" in problems
    assert "'groupName' is a required property" in problems


def test_ray_mlflow_torch_and_python_move_in_lockstep():
    table = validate.versions()
    assert validate.version_problems() == [], json.dumps(table, indent=1)
    # Each version is stated by more than one file, or there would be nothing to hold.
    assert set(table["ray"]) >= {"pyproject.toml", "Dockerfile worker-cpu", "Dockerfile worker-gpu"}
    assert "kuberay/raycluster.yaml" in table["ray"]
    assert {"pyproject.toml", "pyproject.toml [cluster]", "Dockerfile"} <= set(table["mlflow"])
    assert {"pyproject.toml", "Dockerfile"} <= set(table["torch"])
    assert {"pyproject.toml requires-python", "Dockerfile tracking"} <= set(table["python"])
    assert {"Dockerfile torch index", "Dockerfile worker-gpu"} < set(table["cuda"])
    assert any(where.startswith("compose.yaml") for where in table["image tag"])
    assert any(where.startswith("kuberay/") for where in table["image tag"])


def test_versions_that_drift_apart_are_reported(monkeypatch):
    real = validate.versions()
    drifted = copy.deepcopy(real)
    drifted["ray"]["kuberay/raycluster.yaml"] = "2.59.0"
    monkeypatch.setattr(validate, "versions", lambda: drifted)
    (problem,) = validate.version_problems()
    assert problem.startswith("versions of ray differ") and "2.59.0" in problem


def test_images_are_pinned_never_latest():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    images = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    images = [i for i in images if i != "scratch"]
    images += [s["image"] for s in validate.load_compose()["services"].values()]
    images += re.findall(r"image: (\S+)", "".join(p.read_text() for p in DOCKER.glob("kuberay/*")))
    assert len(images) >= 10
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag and tag not in ("", "latest"), image
        assert re.search(r"\d", tag), image


def test_no_secret_is_a_value_in_a_tracked_file():
    """Variables naming a secret hold a path (``*_FILE``, ``*_PATH``), never the secret."""
    for name, service in validate.load_compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_WORDS.search(key):
                assert key.endswith(("_FILE", "_PATH")), (name, key)
                assert str(value).startswith("/run/secrets/"), (name, key, value)
    for line in (DOCKER / ".env.example").read_text().splitlines():
        key = line.lstrip("# ").split("=", 1)[0]
        assert "=" not in line or not SECRET_WORDS.search(key), line
    secret_variables = [
        variable
        for _, document in validate.manifests()
        for variable in _env_entries(document)
        if SECRET_WORDS.search(variable["name"])
    ]
    assert len(secret_variables) >= 2  # the head's and the GPU workers' MLflow password
    for variable in secret_variables:
        assert "value" not in variable and "secretKeyRef" in variable["valueFrom"], variable
    ignored = (DOCKER / ".gitignore").read_text().split()
    assert "secrets/" in ignored and ".env" in ignored


def test_a_missing_schemas_folder_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(validate.SchemasMissingError, match=str(tmp_path)) as raised:
        validate.schemas_dir(tmp_path)
    assert "compose-spec.json" in str(raised.value) and "shared/schemas" in str(raised.value)
    assert validate.main(["--schemas", str(tmp_path)]) == 2
    assert "lacks compose-spec.json" in capsys.readouterr().err


def _env_entries(node):
    """Every entry of every ``env:`` list in a Kubernetes manifest."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env":
                yield from value
            else:
                yield from _env_entries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _env_entries(item)
