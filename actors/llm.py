"""LLM stage: streams a reply from any OpenAI-compatible endpoint.

The embedded llama.cpp server and a remote provider are the same code path:
``openai.AsyncOpenAI`` against ``llm.base_url``. The stream runs on the
actor's own event loop thread; an interrupt cancels its task, which closes the
HTTP stream at once.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from actors.base import Stage, stage_actor
from pipeline.flow.events import LLMCancelled, LLMDone, LLMFirstToken
from pipeline.flow.frames import ControlFrame, EndOfTurnFrame, Frame, FrameError, LLMRequestFrame, LLMTokenFrame


class LLMStage(Stage):
    name = "llm"

    def __init__(self, cfg, base_url: str) -> None:
        super().__init__(cfg)
        self.base_url = base_url
        self.model = cfg.llm.model
        self._tasks: dict[tuple[str, int], asyncio.Task] = {}  # (conversation, response) -> its stream
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="llm-loop", daemon=True).start()

    def setup(self) -> None:
        from openai import AsyncOpenAI

        key = self.cfg.llm.api_key or os.environ.get(self.cfg.llm.api_key_env, "") or "not-needed"
        self.client = AsyncOpenAI(base_url=self.base_url, api_key=key, timeout=self.cfg.llm.timeout_s,
                                  max_retries=0)
        if not self.model:
            self.model = self._run(self._first_model())
        if self.cfg.llm.warmup:
            self._run(self._warmup())

    async def _warmup(self) -> None:
        msgs = [{"role": "system", "content": self.cfg.llm.system_prompt}, {"role": "user", "content": "Hi"}]
        try:
            await self.client.chat.completions.create(model=self.model, messages=msgs, max_tokens=1)
        except Exception as e:
            self.log.warning("LLM warm-up at %s failed: %s", self.base_url, e)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _first_model(self) -> str:
        try:
            models = await self.client.models.list()
            return models.data[0].id if models.data else "default"
        except Exception as e:  # the endpoint may be down now and up later: say so, keep going
            self.log.warning("could not list models at %s (%s); using 'default'", self.base_url, e)
            return "default"

    def extra_stats(self) -> dict:
        return {"model": self.model, "base_url": self.base_url, "active": len(self._tasks)}

    def process(self, frame: Frame) -> None:
        if not isinstance(frame, LLMRequestFrame):
            raise FrameError(f"llm takes LLMRequestFrame, got {frame.kind}")
        fut = asyncio.run_coroutine_threadsafe(self._generate(frame), self._loop)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # exceptions are reported inside

    def on_control(self, frame: ControlFrame, changed: bool) -> None:
        if changed:
            self._loop.call_soon_threadsafe(self._cancel_dead)

    def on_close(self, session_id: str) -> None:
        self._loop.call_soon_threadsafe(self._cancel_dead)

    def _cancel_dead(self) -> None:
        for (sid, rid), task in list(self._tasks.items()):
            if not self.is_live(sid, rid):
                task.cancel()

    async def _generate(self, req: LLMRequestFrame) -> None:
        sid, rid = req.session_id, req.response_id
        key = (sid, rid)
        self._tasks[key] = asyncio.current_task()
        text, first = "", True
        t0 = time.time()
        own = dict(session_id=sid, response_id=rid, priority=req.priority)
        try:
            stream = await self.client.chat.completions.create(
                model=self.model, messages=req.messages, stream=True,
                max_tokens=self.cfg.llm.max_tokens, temperature=self.cfg.llm.temperature)
            try:
                async for chunk in stream:
                    if not self.is_live(sid, rid):
                        break
                    delta = chunk.choices[0].delta.content if chunk.choices else None
                    if not delta:
                        continue
                    if first:
                        first = False
                        self.event(LLMFirstToken(ttft_s=time.time() - t0, **own))
                    text += delta
                    self.emit(LLMTokenFrame(text=delta, **own))
            finally:
                await stream.close()
        except asyncio.CancelledError:
            self.event(LLMCancelled(text=text, **own))
            return
        except Exception as e:
            # no reply will come: the session says so (and a voice conversation says it aloud)
            self.report_error(f"LLM endpoint {self.base_url} failed: {type(e).__name__}: {e}", sid, rid, fatal=True)
            return
        finally:
            self._tasks.pop(key, None)
        if self.is_live(sid, rid):
            self.emit(EndOfTurnFrame(text=text, **own))
            self.event(LLMDone(text=text, llm_s=time.time() - t0, **own))
        else:
            self.event(LLMCancelled(text=text, **own))


LLMActor = stage_actor(LLMStage)
