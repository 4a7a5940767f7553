"""Process helpers: children die with their parent, so no orphan outlives `hybridpool up`."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def child_preexec() -> None:
    """In a child before exec: new process group, and SIGTERM when the parent dies."""
    os.setpgid(0, 0)
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
