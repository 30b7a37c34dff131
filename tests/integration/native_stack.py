"""The docker/ stack run natively on this machine, for tests: the same scripts, no containers.

PostgreSQL 15 (initdb/pg_ctl, as the `postgres` user when running as root) on 127.0.0.1 and
a free port, ``docker/bin/mlflow-server`` on it with basic-auth, ``docker/bin/ray-head``
and ``docker/bin/ray-worker`` nodes with token authentication: what docker/compose.yaml
runs in containers, each service given its settings through the same environment
variables and its secrets through files.

Every process started here carries ``RIGL_STACK=<root>`` in its environment (the Ray
processes pass it on to everything they start, a job's driver in its own session too),
which is how ``stop`` finds and ends exactly those processes and no others.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "docker" / "bin"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
MARKER = "RIGL_STACK"
START_TIMEOUT_S = 120.0
CLEAN_ENV = (
    "RAY_ADDRESS",
    "RAY_API_SERVER_ADDRESS",
    "RAY_AUTH_MODE",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "PGPASSWORD",
)
ADMIN = "admin"


class StackError(RuntimeError):
    """A service did not come up; the message ends with its log."""


def free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return ""


def marked(root: Path) -> list[int]:
    """Pids of the processes whose environment holds ``RIGL_STACK=<root>``."""
    marker = f"{MARKER}={root}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """``pid``'s children, their children, ... (from /proc/<pid>/stat's parent field)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def write_secret(path: Path, value: str) -> Path:
    """``value`` and a newline (as `echo` writes it) in a file only its owner reads."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return path


@dataclass
class Postgres:
    """A PostgreSQL 15 cluster of its own in ``root``: user and database ``mlflow``."""

    root: Path
    password: str
    port: int = field(default_factory=lambda: free_ports(1)[0])

    @property
    def uri(self) -> str:
        """The backend store URI, without the password (that goes through PGPASSWORD_FILE)."""
        return f"postgresql://mlflow@127.0.0.1:{self.port}/mlflow"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def _as_owner(self, *command: str | Path, **kwargs) -> subprocess.CompletedProcess:
        # initdb and the server refuse to run as root; as root, run them as `postgres`.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run(
            [*prefix, *map(str, command)], capture_output=True, text=True, timeout=120, **kwargs
        )

    def _check(self, result: subprocess.CompletedProcess, what: str) -> None:
        if result.returncode != 0:
            raise StackError(f"{what} failed:\n{result.stdout}{result.stderr}\n{tail(self.log)}")

    def start(self, env: dict[str, str]) -> None:
        if not (PG_BIN / "initdb").exists():
            raise StackError(
                f"PostgreSQL 15's server is not installed ({PG_BIN} is missing): "
                "apt-get install postgresql-15 (.ci/run does)"
            )
        self.root.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        # Local connections (a socket in this private folder) are trusted, for set-up only;
        # TCP ones need the password.
        init = self._as_owner(
            PG_BIN / "initdb",
            *("-D", self.root / "data", "-U", "postgres", "-E", "UTF8"),
            *("--auth-local=trust", "--auth-host=scram-sha-256"),
            env=env,
        )
        self._check(init, "initdb")
        self.run_server("start", env)
        sql = (
            f"CREATE ROLE mlflow LOGIN PASSWORD '{self.password}';\n"
            "CREATE DATABASE mlflow OWNER mlflow;\n"
        )
        psql = self._as_owner(
            PG_BIN / "psql",
            *("-h", self.root, "-p", str(self.port), "-U", "postgres"),
            *("-v", "ON_ERROR_STOP=1", "-q", "-f", "-"),
            input=sql,  # on stdin: the password never appears on a command line
            env=env,
        )
        self._check(psql, "creating the mlflow role and database")

    def run_server(self, action: str, env: dict[str, str]) -> None:
        """``pg_ctl start`` or ``pg_ctl stop`` (fast: open connections are cut), waiting."""
        options = ("-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}")
        extra = ("-l", self.log, *options) if action == "start" else ("-m", "fast")
        result = self._as_owner(PG_BIN / "pg_ctl", "-D", self.root / "data", "-w", *extra, action)
        self._check(result, f"pg_ctl {action}")


@dataclass
class Service:
    """A script of docker/bin/ running in its own session, its output in ``log``."""

    name: str
    proc: subprocess.Popen
    log: Path


@dataclass
class Stack:
    """The running services and their secrets (each also in a file under ``root/secrets``)."""

    root: Path
    env: dict[str, str]
    postgres: Postgres
    admin_password: str = field(default_factory=lambda: "admin-" + secrets.token_hex(12))
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    mlflow_port: int = field(default_factory=lambda: free_ports(1)[0])
    gcs_port: int = field(default_factory=lambda: free_ports(1)[0])
    dashboard_port: int = field(default_factory=lambda: free_ports(1)[0])
    services: list[Service] = field(default_factory=list)

    @property
    def secrets(self) -> dict[str, str]:
        return {
            "MLflow admin password": self.admin_password,
            "PostgreSQL password": self.postgres.password,
            "Ray token": self.token,
        }

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def jobs_address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def secret_dir(self) -> Path:
        return self.root / "secrets"

    def node_env(self) -> dict[str, str]:
        """What ray-head and ray-worker get (compose.yaml's x-ray-node environment)."""
        return {
            **self.env,
            "HOME": str(self.root / "cluster-home"),  # no ~/.ray of this machine
            "RAY_AUTH_TOKEN_PATH": str(self.secret_dir / "ray_token"),
            "RAY_NODE_IP": "127.0.0.1",
            "MLFLOW_TRACKING_USERNAME": ADMIN,
            "MLFLOW_TRACKING_PASSWORD_FILE": str(self.secret_dir / "mlflow_admin_password"),
        }

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def launch(self, name: str, command: list[str], env: dict[str, str]) -> Service:
        log = self.root / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        service = Service(name, proc, log)
        self.services.append(service)
        return service

    def start_mlflow(self) -> Service:
        env = {
            **self.env,
            "MLFLOW_BACKEND_STORE_URI": self.postgres.uri,
            "MLFLOW_ARTIFACTS_DESTINATION": str(self.root / "artifacts"),
            "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_PORT": str(self.mlflow_port),
            "MLFLOW_SERVER_ALLOWED_HOSTS": f"127.0.0.1:{self.mlflow_port},localhost:*",
            "MLFLOW_WORKERS": "2",
            "MLFLOW_AUTH_ADMIN_PASSWORD_FILE": str(self.secret_dir / "mlflow_admin_password"),
            "PGPASSWORD_FILE": str(self.secret_dir / "postgres_password"),
        }
        return self.launch("mlflow", [sys.executable, str(BIN / "mlflow-server")], env)

    def start_head(self) -> Service:
        env = {**self.node_env(), "RAY_PORT": str(self.gcs_port)}
        env["RAY_DASHBOARD_PORT"] = str(self.dashboard_port)
        return self.launch("ray-head", [str(BIN / "ray-head"), *self._ports(head=True)], env)

    def start_worker(self, index: int, cpus: int) -> Service:
        env = {**self.node_env(), "RAY_ADDRESS": f"127.0.0.1:{self.gcs_port}"}
        env["RAY_NUM_CPUS"] = str(cpus)
        return self.launch(f"ray-worker-{index}", [str(BIN / "ray-worker"), *self._ports()], env)

    def _ports(self, head: bool = False) -> list[str]:
        """Every port of a node chosen free (several nodes share this machine) and its
        temporary folder: `ray start` flags the scripts pass on as they are."""
        names = ["dashboard-agent-listen", "dashboard-agent-grpc", "runtime-env-agent"]
        names += ["metrics-export", "node-manager", "object-manager"]
        names += ["ray-client-server"] if head else []
        flags = [f"--{n}-port={p}" for n, p in zip(names, free_ports(len(names)), strict=True)]
        return [*flags, "--min-worker-port=0", "--max-worker-port=0", f"--temp-dir={self.ray_dir}"]

    @property
    def ray_dir(self) -> Path:
        return self.root / "ray"

    def wait_http(self, service: Service, url: str, headers: dict | None = None) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if service.proc.poll() is not None:
                raise StackError(
                    f"{service.name} exited with {service.proc.returncode}:\n" + tail(service.log)
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, headers=headers, timeout=5).status_code == 200:
                    return
            time.sleep(0.5)
        raise StackError(f"{service.name} did not answer {url} in time:\n{tail(service.log)}")

    def alive_nodes(self) -> int:
        response = requests.get(
            f"{self.jobs_address}/api/v0/nodes",
            params={"limit": 100},
            headers=self.ray_auth(),
            timeout=10,
        )
        response.raise_for_status()
        nodes = response.json()["data"]["result"]["result"]
        return sum(node["state"] == "ALIVE" for node in nodes)

    def wait_nodes(self, service: Service, count: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if service.proc.poll() is not None:
                raise StackError(f"{service.name} exited:\n{tail(service.log)}")
            with contextlib.suppress(requests.RequestException, KeyError):
                if self.alive_nodes() >= count:
                    return
            time.sleep(1)
        raise StackError(f"{service.name} did not join the cluster:\n{tail(service.log)}")

    def ray_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def stop(self) -> None:
        """SIGTERM each service (`ray start --block` and mlflow-server then stop what they
        started), SIGKILL whatever of the stack is left, stop PostgreSQL; fail if a
        process of the stack survives."""
        for service in reversed(self.services):
            with contextlib.suppress(ProcessLookupError):
                service.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for service in self.services:
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        deadline = time.monotonic() + 30
        while (left := marked(self.root)) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        for service in self.services:
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.proc.wait(timeout=10)
        if (self.postgres.root / "data" / "postmaster.pid").exists():
            self.postgres.run_server("stop", self.env)
        assert not marked(self.root), "processes of the test's stack leaked"


def start_stack(root: Path, workers: int = 2) -> Stack:
    """PostgreSQL, then the tracking server and the head together, then the workers one at
    a time (two nodes starting at once on one machine race for their socket names)."""
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env.update(
        {MARKER: str(root)},
        # The job's entrypoint runs `python` from the PATH of the head's processes.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    stack = Stack(root, env, Postgres(root / "postgres", "pg-" + secrets.token_hex(12)))
    write_secret(stack.secret_dir / "mlflow_admin_password", stack.admin_password)
    write_secret(stack.secret_dir / "postgres_password", stack.postgres.password)
    write_secret(stack.secret_dir / "ray_token", stack.token)
    try:
        stack.postgres.start(env)
        mlflow = stack.start_mlflow()
        head = stack.start_head()
        stack.wait_http(mlflow, f"{stack.tracking_uri}/health")
        stack.wait_http(head, f"{stack.jobs_address}/api/jobs/", headers=stack.ray_auth())
        for index in range(workers):
            worker = stack.start_worker(index, cpus=1)
            stack.wait_nodes(worker, index + 2)
    except BaseException:
        stack.stop()
        raise
    return stack
