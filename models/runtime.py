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


def one_at_a_time(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` behind a lock: for code that is not thread-safe, called from several threads."""
    lock = threading.Lock()

    def locked(*args: Any, **kwargs: Any) -> T:
        with lock:
            return fn(*args, **kwargs)

    return locked


class AbortableSession:
    """An onnxruntime session whose running ``run()`` calls another thread can stop.

    The caller labels the work with ``tag`` (e.g. a response id) before running
    it, on the thread that runs it (the tag is per thread: two synthesis lanes
    share one session); ``abort_if(dead)`` sets ``RunOptions.terminate`` on each
    call in flight whose tag is dead, which then raises within milliseconds: an
    interrupted reply's synthesis frees the CPU at once instead of finishing a
    clause nobody will hear. Checking the tags under the lock means a later,
    live call is never hit by an abort meant for an earlier one.
    """

    def __init__(self, session) -> None:
        self._session = session
        self._local = threading.local()
        self._running: dict[int, tuple[Any, Any]] = {}  # thread -> (RunOptions, tag) of its call in flight
        self._lock = threading.Lock()
        self.aborted = 0

    @property
    def tag(self) -> Any:
        return getattr(self._local, "tag", None)

    @tag.setter
    def tag(self, value: Any) -> None:
        self._local.tag = value

    def __getattr__(self, name: str):
        return getattr(self._session, name)

    def run(self, output_names, input_feed, run_options=None):
        import onnxruntime as ort

        opts = run_options or ort.RunOptions()
        me = threading.get_ident()
        with self._lock:
            self._running[me] = (opts, self.tag)
        try:
            return self._session.run(output_names, input_feed, opts)
        finally:
            with self._lock:
                self._running.pop(me, None)

    def abort_if(self, dead: Callable[[Any], bool]) -> bool:
        hit = False
        with self._lock:
            for opts, tag in self._running.values():
                if dead(tag) and not opts.terminate:
                    opts.terminate = True
                    self.aborted += 1
                    hit = True
        return hit
