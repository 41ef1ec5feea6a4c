"""Small helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def concurrently(target: Callable[..., Any], arguments: Sequence[tuple], timeout: float = 120.0) -> list:
    """Run target(*args) for every tuple at the same time, one thread each; return the results in order.

    The first exception a call raised is raised here, so a failing thread fails the test.
    """
    with ThreadPoolExecutor(max_workers=max(1, len(arguments))) as pool:
        futures = [pool.submit(target, *args) for args in arguments]
        return [future.result(timeout=timeout) for future in futures]
