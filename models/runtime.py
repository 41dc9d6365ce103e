"""Run model inference on one worker thread at lowered OS priority.

On 2 cores, CPU-bound inference at normal priority delays Ray's own threads
(measured: a hop went from ~1 ms to ~30 ms median, 1-1.8 s p99). Linux nice
values are per thread and inherited by threads created later, so loading the
model *on* the niced worker makes onnxruntime's and CTranslate2's pools niced
too, while the actor's Ray threads (control lane included) keep normal priority.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def lower_thread_priority(nice: int) -> int:
    """Raise this thread's nice value to ``nice`` (never lowers it); returns it."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return 0
    tid = threading.get_native_id()
    current = os.getpriority(os.PRIO_PROCESS, tid)
    if nice > current:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    return os.getpriority(os.PRIO_PROCESS, tid)


class InferenceThread:
    def __init__(self, name: str, nice: int) -> None:
        self.nice = nice
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name,
                                        initializer=lower_thread_priority, initargs=(nice,))

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._pool.submit(fn, *args, **kwargs).result()

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any):
        return self._pool.submit(fn, *args, **kwargs)

    def thread_nice(self) -> int:
        return self.call(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
