"""Static checks of docker/: what can be checked without Docker or Kubernetes.

    python docker/validate.py [--schemas DIR]

- compose.yaml against the Compose Specification's JSON schema; every secret, volume and
  service it refers to is defined; every published port is bound to 127.0.0.1 (with .env
  unset); every long-running service has a health check;
- kuberay/*.yaml against KubeRay v1.7.0's CRD schemas (the ``v1`` openAPIV3Schema);
- the versions of Ray, MLflow, torch (and its CUDA), Python and of the project's own images
  agree across Dockerfile, compose.yaml, kuberay/ and pyproject.toml.

The schemas are data files of their upstream projects, kept in the ``shared/schemas``
folder beside the checkout (``--schemas`` names another). Exit status: 0 when all holds,
1 with one line per problem, 2 when the schemas folder is missing.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

DOCKER = Path(__file__).resolve().parent
REPO = DOCKER.parent
SCHEMAS = REPO.parent / "shared" / "schemas"
COMPOSE_SCHEMA = "compose-spec.json"
CRDS = {
    "RayCluster": "kuberay-v1.7.0-ray.io_rayclusters.yaml",
    "RayJob": "kuberay-v1.7.0-ray.io_rayjobs.yaml",
}
TORCH_CUDA = {"2.14.1": "cu130"}
"""torch release -> the CUDA of its default Linux wheels (torch.version.cuda 13.0 for
2.14.1); a new torch needs its line here, and worker-gpu a base image of that CUDA."""
LOOPBACK_PREFIX = "127.0.0.1:"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


class SchemasMissingError(RuntimeError):
    """The folder of upstream schemas is absent: the checks cannot run."""


def schemas_dir(path: Path | None = None) -> Path:
    """The schemas folder, checked to hold every file the checks need."""
    folder = path or SCHEMAS
    wanted = [COMPOSE_SCHEMA, *CRDS.values()]
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        raise SchemasMissingError(
            f"the schemas folder {folder} lacks {', '.join(missing)}: docker/ is validated "
            "against the Compose Specification and KubeRay v1.7.0 CRD schemas kept in "
            "shared/schemas beside the checkout (or give --schemas DIR)"
        )
    return folder


def interpolate(node: Any) -> Any:
    """``node`` with each ``${VAR:-default}`` replaced by its default (as compose does when
    .env and the environment leave VAR unset); ``$$`` is a literal ``$``."""
    if isinstance(node, dict):
        return {key: interpolate(value) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value) for value in node]
    if isinstance(node, str):
        return _VARIABLE.sub(lambda m: m.group(2) or "", node).replace("$$", "$")
    return node


def load_compose(path: Path = DOCKER / "compose.yaml") -> dict[str, Any]:
    return interpolate(yaml.safe_load(path.read_text()))


def compose_problems(compose: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Schema errors, dangling references, non-loopback ports, services without health."""
    problems = [
        f"compose.yaml: {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(compose)
    ]
    services = compose.get("services", {})
    defined = {kind: set(compose.get(kind) or {}) for kind in ("secrets", "volumes")}
    for name, service in services.items():
        for secret in service.get("secrets", []):
            secret = secret if isinstance(secret, str) else secret.get("source")
            if secret not in defined["secrets"]:
                problems.append(f"compose.yaml: {name} uses the undefined secret {secret}")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
            named = source and not source.startswith((".", "/", "~"))
            if named and source not in defined["volumes"]:
                problems.append(f"compose.yaml: {name} uses the undefined volume {source}")
        for other in service.get("depends_on", []):
            if other not in services:
                problems.append(f"compose.yaml: {name} depends on the undefined service {other}")
        for port in service.get("ports", []):
            published = port if isinstance(port, str) else str(port.get("host_ip", "")) + ":"
            if not published.startswith(LOOPBACK_PREFIX):
                problems.append(
                    f"compose.yaml: {name} publishes {port!r}, which is not bound to "
                    f"127.0.0.1 by default"
                )
        one_shot = str(service.get("restart")) == "no"  # said explicitly: it runs once
        if not one_shot and "test" not in (service.get("healthcheck") or {}):
            problems.append(f"compose.yaml: {name} runs for good but has no health check")
    for kind, names in defined.items():
        used = {
            (s if isinstance(s, str) else s.get("source"))
            for service in services.values()
            for s in service.get(kind, [])
        }
        if kind == "volumes":
            used = {str(v).split(":")[0] for v in used}
        problems += [
            f"compose.yaml: the {kind[:-1]} {n} is defined but unused" for n in names - used
        ]
    return problems


def manifests(folder: Path = DOCKER / "kuberay") -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(folder.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


@functools.cache
def crd_validators(folder: Path) -> dict[str, jsonschema.Draft7Validator]:
    """kind -> a validator of the CRD's ``v1`` openAPIV3Schema (the files are large: C YAML
    parser when PyYAML has it, and once per folder)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    validators = {}
    for kind, name in CRDS.items():
        crd = yaml.load((folder / name).read_text(), Loader=loader)
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        validators[kind] = jsonschema.Draft7Validator(version["schema"]["openAPIV3Schema"])
    return validators


def kuberay_problems(folder: Path, manifest_dir: Path = DOCKER / "kuberay") -> list[str]:
    """Each manifest of ``manifest_dir`` against the ``v1`` schema of its kind's CRD
    (the CRDs in ``folder``)."""
    validators = crd_validators(folder)
    problems = []
    for path, document in manifests(manifest_dir):
        where = f"kuberay/{path.name}"
        kind = document.get("kind")
        if kind not in validators or document.get("apiVersion") != "ray.io/v1":
            problems.append(f"{where}: {document.get('apiVersion')}/{kind} is not a ray.io/v1 kind")
            continue
        problems += [
            f"{where}: {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in validators[kind].iter_errors(document)
        ]
    return problems


def _pins(requirements: list[str]) -> dict[str, str]:
    """name -> version of each ``name[extras]==version`` requirement."""
    found = {}
    for requirement in requirements:
        if match := re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==([^;\s]+)", requirement):
            found[match.group(1).lower()] = match.group(2)
    return found


def versions() -> dict[str, dict[str, str]]:
    """What each file says of each version: {"ray": {"pyproject.toml": "2.60.0", ...}}."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    table: dict[str, dict[str, str]] = {}

    def note(what: str, where: str, value: str) -> None:
        table.setdefault(what, {})[where] = value

    pins = _pins(project["dependencies"])
    for extra, requirements in project["optional-dependencies"].items():
        for name, version in _pins(requirements).items():
            note(name, f"pyproject.toml [{extra}]", version)
    for name in ("ray", "mlflow", "torch", "torchvision"):
        note(name, "pyproject.toml", pins[name])
    note("python", "pyproject.toml requires-python", project["requires-python"].lstrip(">="))
    note("image tag", "pyproject.toml version", project["version"])
    if pins["torch"] in TORCH_CUDA:
        note("cuda", f"torch {pins['torch']}'s wheels", TORCH_CUDA[pins["torch"]])

    dockerfile = (DOCKER / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.MULTILINE))
    note("mlflow", "Dockerfile", args["MLFLOW_VERSION"])
    note("psycopg", "Dockerfile", args["PSYCOPG_VERSION"])
    note("torch", "Dockerfile", args["TORCH_VERSION"])
    note("torchvision", "Dockerfile", args["TORCHVISION_VERSION"])
    note("cuda", "Dockerfile torch index", args["TORCH_CUDA_INDEX"].rsplit("/", 1)[-1])
    for image, target in re.findall(r"^FROM (\S+) AS (\S+)$", dockerfile, re.MULTILINE):
        if match := re.fullmatch(r"rayproject/ray:([\d.]+)-py(\d)(\d+)-(\w+)", image):
            note("ray", f"Dockerfile {target}", match.group(1))
            note("python", f"Dockerfile {target}", f"{match.group(2)}.{match.group(3)}")
            if match.group(4) != "cpu":
                note("cuda", f"Dockerfile {target}", match.group(4))
        elif match := re.fullmatch(r"python:(\d+\.\d+)\.\d+-\S+", image):
            note("python", f"Dockerfile {target}", match.group(1))

    for name, service in load_compose()["services"].items():
        if service.get("image", "").startswith("rigl-sweeps/"):
            note("image tag", f"compose.yaml {name}", service["image"].rsplit(":", 1)[1])
    for path, document in manifests():
        where = f"kuberay/{path.name}"
        if document.get("kind") == "RayCluster":
            note("ray", where, document["spec"]["rayVersion"])
            for image, tag in re.findall(
                r"image: (rigl-sweeps/\S+):(\S+)", yaml.safe_dump(document)
            ):
                note("image tag", f"{where} {image}", tag)
    return table


def version_problems() -> list[str]:
    return [
        f"versions of {what} differ: {json.dumps(found)}"
        for what, found in versions().items()
        if len(set(found.values())) > 1
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schemas", type=Path, help="the folder of upstream schemas")
    args = parser.parse_args(argv)
    try:
        folder = schemas_dir(args.schemas)
    except SchemasMissingError as exc:
        print(f"docker/validate.py: {exc}", file=sys.stderr)
        return 2
    schema = json.loads((folder / COMPOSE_SCHEMA).read_text())
    problems = compose_problems(load_compose(), schema)
    problems += kuberay_problems(folder) + version_problems()
    for problem in problems:
        print(f"docker/validate.py: {problem}", file=sys.stderr)
    if not problems:
        print("docker/: compose.yaml, kuberay/ and the versions check out")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
