"""One tracking server per local store, shared by every command and stopped when idle.

The first command that needs the local store starts a server (through the startup lock,
``server.lock``); later commands find it through ``server.json`` and reuse it, so
``rigl status`` does not wait for a server to start. Files under ``<store>/``:

- ``server.json``: the server's uri and its watchdog's pid, written once ``/health``
  answers;
- ``server.owner``: locked (flock) by the watchdog and the guard of ``mlflow server`` for
  as long as any of them lives. A second server on the store cannot start (it would fail
  to take this lock), and a ``server.json`` whose owner lock is free names a server that
  is gone (killed, or its machine restarted): it is replaced;
- ``server.inuse``: every command holds a shared lock on it while it uses the server
  (a sweep for as long as it runs); the server stops only when it can lock it alone;
- ``server.used``: its modification time is the last use.

The watchdog (``python -m orchestrator.tracking.shared ROOT PORT IDLE_S``) runs ``mlflow
server`` on 127.0.0.1 through ``orchestrator.guard``, and stops it ``IDLE_S`` seconds after
the last command left, on SIGTERM (``rigl server stop``), when it dies, or when the store
directory is removed. Only this one server writes the SQLite database.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from orchestrator.errors import TrackingUnavailableError, UsageError
from orchestrator.tracking.server import LocalStore, _free_port, _startup_lock, _tail

IDLE_ENV = "RIGL_SERVER_IDLE_S"
DEFAULT_IDLE_S = 600.0
"""Seconds the shared server stays up after the last command left it."""
STOP_GRACE_S = 20.0
POLL_S = 0.25


def idle_seconds() -> float:
    """``$RIGL_SERVER_IDLE_S`` (default 600); 0 means no shared server: each command
    starts and stops a private one."""
    text = os.environ.get(IDLE_ENV, str(DEFAULT_IDLE_S))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise UsageError(f"{IDLE_ENV}={text!r} is not allowed: a number of seconds >= 0")
    return value


@contextlib.contextmanager
def shared_server(store: LocalStore, idle_s: float, startup_timeout: float) -> Iterator[str]:
    """Yield the uri of the store's shared server, starting it if none answers; the
    server is held in use (``server.inuse``) until the block ends."""
    with _startup_lock(store.root):
        uri = running(store) or _start(store, idle_s, startup_timeout)
        lease = open(store.root / "server.inuse", "a")  # noqa: SIM115 - held past the lock
        fcntl.flock(lease, fcntl.LOCK_SH)
        _touch(store)
    try:
        yield uri
    finally:
        with contextlib.suppress(OSError):
            _touch(store)
        lease.close()


def running(store: LocalStore) -> str | None:
    """The uri of the store's live, answering server; a dead one's record is removed and
    one that holds the store but does not answer is stopped. Call under the startup lock."""
    info = _record(store)
    if info is None:
        return None
    if not _owned(store):
        _remove_record(store)
        return None
    if _healthy(info["uri"]):
        return str(info["uri"])
    _terminate(store, info)
    return None


def stop(store: LocalStore) -> str:
    """Stop the store's shared server (``rigl server stop``); what was done, in words.
    UsageError while a command uses it (a sweep would lose its server)."""
    with _startup_lock(store.root):
        info = _record(store)
        if info is None or not _owned(store):
            _remove_record(store)
            return f"no tracking server is running for {store.root}"
        with open(store.root / "server.inuse", "a") as lease:
            try:
                fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UsageError(
                    f"the tracking server at {info['uri']} is in use by a running command "
                    "(a sweep?); stop it first, or let the server stop by itself when idle"
                ) from None
            _terminate(store, info)
    return f"stopped the tracking server at {info['uri']}"


def register(commands: Any) -> None:
    """``rigl server stop`` on the CLI's subcommands."""
    server = commands.add_parser("server", help="the local store's shared tracking server")
    server.add_argument("action", choices=["stop"], help="stop: stop it now (if idle)")
    server.set_defaults(func=cmd_server)


def cmd_server(args: Any) -> int:
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        print(f"MLFLOW_TRACKING_URI is set: the server at {uri} is not this project's to stop")
        return 0
    store = LocalStore.under()
    if not store.root.is_dir():
        print(f"no tracking server is running for {store.root}")
        return 0
    print(stop(store))
    return 0


# --- the command's side -------------------------------------------------------------------


def _start(store: LocalStore, idle_s: float, timeout: float) -> str:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    deadline = time.monotonic() + timeout
    while _owned(store):  # one left starting by a killed command, or one still stopping
        if time.monotonic() > deadline:
            raise TrackingUnavailableError(
                f"a tracking server holds {store.root} but does not answer; its log, "
                f"{store.log}, ends with:\n{_tail(store.log, 2000).decode(errors='replace')}"
            )
        if uri := running(store):
            return uri
        time.sleep(POLL_S)
    for _ in range(3):
        port = _free_port()
        command = [sys.executable, "-m", __name__, str(store.root), str(port), f"{idle_s:g}"]
        launcher = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, check=False
        )
        pid = int(launcher.stdout.strip() or 0)
        uri = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline and pid and _pid_alive(pid):
            info = _record(store)
            if info and info.get("pid") == pid and _healthy(uri):
                return uri
            time.sleep(POLL_S)
        if pid and _pid_alive(pid):  # out of time: do not leave it starting behind us
            _terminate(store, {"pid": pid, "uri": uri})
        if time.monotonic() >= deadline or b"already in use" not in _tail(store.log, 4000):
            break
    raise TrackingUnavailableError(
        f"the shared MLflow server at {uri} did not start within {timeout:g} s; "
        f"its log, {store.log}, ends with:\n{_tail(store.log, 2000).decode(errors='replace')}"
    )


def _terminate(store: LocalStore, info: dict[str, Any]) -> None:
    """SIGTERM the watchdog's process group, SIGKILL it after STOP_GRACE_S; return once
    nothing holds the store (the owner lock is free) and its record is gone."""
    pgid = int(info["pid"])
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while _owned(store) or _group_alive(pgid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        time.sleep(POLL_S)
    _remove_record(store)


def _record(store: LocalStore) -> dict[str, Any] | None:
    try:
        info = json.loads((store.root / "server.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and {"pid", "uri"} <= set(info) else None


def _remove_record(store: LocalStore) -> None:
    with contextlib.suppress(FileNotFoundError):
        (store.root / "server.json").unlink()


def _owned(store: LocalStore) -> bool:
    """Whether a server process holds the store's owner lock."""
    with open(store.root / "server.owner", "a") as owner:
        try:
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(owner, fcntl.LOCK_UN)
    return False


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return False  # no server, or something else on its port


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no init has reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _touch(store: LocalStore) -> None:
    (store.root / "server.used").touch()


# --- the watchdog -------------------------------------------------------------------------


def _watch(root: Path, port: int, idle_s: float) -> int:
    """Run the server until it is idle, told to stop, dead, or its store is removed."""
    store = LocalStore(
        root, f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", root / "server.log"
    )
    owner = open(root / "server.owner", "a")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 3  # another server holds this store
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    uri = f"http://127.0.0.1:{port}"
    with open(store.log, "ab") as log:
        log.write(f"\n--- {datetime.now(UTC).isoformat()} shared server {uri}\n".encode())
        log.flush()
        guard = [sys.executable, "-m", "orchestrator.guard", str(os.getpid())]
        server = subprocess.Popen(
            guard + store.server_command(port),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(owner.fileno(),),
        )
    while not _healthy(uri):
        if server.poll() is not None or stopping:
            return _shutdown(server, 1)
        time.sleep(POLL_S)
    record = root / "server.json.tmp"
    record.write_text(json.dumps({"pid": os.getpid(), "uri": uri, "port": port}))
    os.replace(record, root / "server.json")
    while server.poll() is None and not stopping and root.is_dir():
        if _idle(store, idle_s):
            _remove_record(store)  # under the startup lock, which _idle took and keeps
            break
        time.sleep(1.0)
    return _shutdown(server, 0)


def _idle(store: LocalStore, idle_s: float) -> bool:
    """True, holding the startup and in-use locks until exit, when no command has used
    the server for ``idle_s`` seconds and none holds it now."""
    try:
        last = (store.root / "server.used").stat().st_mtime
    except OSError:
        last = 0.0
    if time.time() - last < idle_s:
        return False
    locks: list[IO[str]] = []
    for name in ("server.lock", "server.inuse"):
        handle = open(store.root / name, "a")  # noqa: SIM115 - kept until exit on success
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            for held in locks:
                held.close()
            return False
        locks.append(handle)
    _held.extend(locks)
    return True


_held: list[IO[str]] = []


def _shutdown(server: subprocess.Popen[bytes], code: int) -> int:
    """End the guard and the server (the whole process group but this process)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(os.getpgrp(), signal.SIGTERM)
    try:
        server.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    return code


def main(argv: list[str]) -> int:
    """Fork the watchdog into its own session, print its pid and return at once, so the
    command that starts it neither waits for it nor keeps it as a child."""
    root, port, idle_s = Path(argv[0]), int(argv[1]), float(argv[2])
    pid = os.fork()
    if pid:
        print(pid, flush=True)
        return 0
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os._exit(_watch(root, port, idle_s))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
