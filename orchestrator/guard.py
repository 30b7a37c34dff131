"""Run a command for as long as another process lives.

    python -m orchestrator.guard PARENT_PID COMMAND...

The private MLflow server is started through this guard so that it never outlives the
`rigl` process that started it, even when that process is killed with SIGKILL and has no
chance to clean up. The guard, the server and the server's own workers share one process
group (the guard's session); when the parent is gone the guard ends the whole group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_S = 1.0
GRACE_S = 15.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return os.getppid() == pid


def main(argv: list[str]) -> int:
    parent, command = int(argv[0]), argv[1:]
    child = subprocess.Popen(command)
    while child.poll() is None and _alive(parent):
        time.sleep(POLL_S)
    if child.poll() is not None:
        return child.returncode
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(os.getpgrp(), signal.SIGTERM)
    try:
        child.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
