"""Ctrl-C in the sweep driver: a flag checked by the driver loop, not an exception that a
Ray call could swallow."""

from __future__ import annotations

import os
import signal

import pytest

from orchestrator.executor import _CtrlC


def test_first_ctrl_c_is_a_flag_the_loop_raises_on_second_raises_at_once():
    before = signal.getsignal(signal.SIGINT)
    interrupted = _CtrlC()
    try:
        interrupted.check()  # nothing pressed yet
        os.kill(os.getpid(), signal.SIGINT)  # handled here, between bytecodes: no raise
        with pytest.raises(KeyboardInterrupt):
            interrupted.check()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            signal.getsignal(signal.SIGINT)  # any bytecode lets the handler run
    finally:
        interrupted.restore()
    assert signal.getsignal(signal.SIGINT) is before
