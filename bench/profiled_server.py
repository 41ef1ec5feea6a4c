"""python -m bench.profiled_server [server options]: backend_flask.server with a CPU sampler in each worker.

The bench runs it to see where the server's CPU goes (bench/cpuprofile.py);
samples are written under $BENCH_PROFILE_DIR. Nothing else differs from
`python -m backend_flask.server`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# First, as under `-m backend_flask.server`: importing the server patches the standard library with gevent.
from backend_flask import server  # isort: skip

from bench import cpuprofile  # noqa: E402

if __name__ == "__main__":
    cpuprofile.install_in_workers(Path(os.environ["BENCH_PROFILE_DIR"]),
                                  float(os.environ.get("BENCH_PROFILE_INTERVAL", "0.001")))
    sys.exit(server.main())
