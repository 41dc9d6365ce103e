"""The embedded OpenAI-compatible LLM server (llama-cpp-python + SmolLM2 GGUF).

Started only when ``llm.base_url`` is empty, bound to loopback, at a lowered
priority; the LLM stage then talks to it with the same ``openai`` client it
would use for any remote provider.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from models.registry import ModelNotFound, smollm2_path
from pipeline.config import Config


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedLLMServer:
    def __init__(self, cfg: Config, log_path: str | Path | None = None) -> None:
        self.cfg = cfg
        self.model = smollm2_path(cfg)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        try:
            import llama_cpp.server  # noqa: F401
        except ImportError as e:
            raise ModelNotFound(f"embedded LLM needs llama-cpp-python[server] ({e}); "
                                "or set llm.base_url to an OpenAI-compatible endpoint") from None
        c = self.cfg.llm
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_threads", str(c.embedded_threads), "--n_ctx", str(c.embedded_ctx),
               "--model_alias", self.model.stem]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        nice = c.embedded_nice
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=(lambda: os.nice(nice)) if nice else None,
                                     start_new_session=True)
        deadline = time.monotonic() + c.embedded_start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"embedded LLM server exited with {self.proc.returncode}"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=1) as r:
                    if r.status == 200:
                        return self.base_url
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"embedded LLM server did not answer within {c.embedded_start_timeout_s} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
