"""A scripted OpenAI-compatible streaming chat server (stdlib only).

For tests and benchmarks: a real HTTP server speaking the same SSE stream as
OpenAI's ``/v1/chat/completions``, so the real ``openai`` client is exercised,
with a fixed reply, a set time to first token and a set token rate. It burns
no CPU while "thinking", which makes latency comparisons fair.

    python -m tests.rigs.fake_llm --reply "Paris is the capital." --ttft 0.2
"""
from __future__ import annotations

import argparse
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeLLM:
    def __init__(self, reply: str = "Hello there! I am a scripted reply.", ttft: float = 0.2,
                 tokens_per_s: float = 50.0, host: str = "127.0.0.1", port: int = 0,
                 replies: dict[str, str] | None = None, fail_on: tuple[str, ...] = ()) -> None:
        self.reply, self.ttft, self.tokens_per_s = reply, ttft, tokens_per_s
        # keyword (lower case) in the last user message -> the reply to give instead
        self.replies = {k.lower(): v for k, v in (replies or {}).items()}
        # keyword (lower case) in the last user message -> the endpoint fails (HTTP 500), as a broken one would
        self.fail_on = tuple(k.lower() for k in fail_on)
        self.requests: list[dict[str, Any]] = []  # bodies received, for assertions
        self.closed_early = 0  # streams the client hung up on
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _json(self, code: int, obj: Any) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "test"}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._json(404, {"error": {"message": "not found"}})
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                except ValueError:
                    return self._json(400, {"error": {"message": "bad json"}})
                server.requests.append(body)
                if server.fails(body.get("messages") or []):
                    return self._json(500, {"error": {"message": "scripted failure"}})
                reply = server.reply_to(body.get("messages") or [])
                if not body.get("stream"):
                    return self._json(200, {"id": "x", "object": "chat.completion", "model": "fake", "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}]})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                time.sleep(server.ttft)
                try:
                    for tok in re.findall(r"\s*\S+", reply):
                        self._chunk({"content": tok})
                        time.sleep(1.0 / server.tokens_per_s)
                    self._chunk({}, finish="stop")
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    server.closed_early += 1
                self.close_connection = True

            def _chunk(self, delta: dict, finish: str | None = None) -> None:
                obj = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                       "model": "fake", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://{host}:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def _last_user(messages: list[dict[str, Any]]) -> str:
        last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        if isinstance(last, list):  # content parts: the text ones
            last = " ".join(p.get("text", "") for p in last if isinstance(p, dict))
        return str(last).lower()

    def fails(self, messages: list[dict[str, Any]]) -> bool:
        last = self._last_user(messages)
        return any(k in last for k in self.fail_on)

    def reply_to(self, messages: list[dict[str, Any]]) -> str:
        last = self._last_user(messages)
        return next((r for k, r in self.replies.items() if k in last), self.reply)

    def __enter__(self) -> "FakeLLM":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reply", default="Hello there! I am a scripted reply.")
    ap.add_argument("--ttft", type=float, default=0.2)
    ap.add_argument("--tokens-per-s", type=float, default=50.0)
    ap.add_argument("--port", type=int, default=8089)
    a = ap.parse_args()
    with FakeLLM(a.reply, a.ttft, a.tokens_per_s, port=a.port) as f:
        print(f"fake LLM at {f.base_url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
