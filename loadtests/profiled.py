"""Run a module under cProfile and write the profile when it stops (SIGTERM included).

    python -m loadtests.profiled OUT.prof services.telemetry

uvicorn re-raises the stop signal after its graceful shutdown, which would kill the process before
`python -m cProfile` writes anything; the handler installed here runs instead and writes the profile.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
from types import FrameType


def main() -> None:
    """Profile sys.argv[2] as __main__, writing the stats to sys.argv[1]."""
    out, module = sys.argv[1], sys.argv[2]
    profiler = cProfile.Profile()

    def _stop(signum: int, _: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(out)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    profiler.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
