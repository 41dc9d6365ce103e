"""The probe, subprocess side (``python -m tests.rigs.virtual_audio probe PLAN``): one duplex
sounddevice stream plays the plan's clips into its sink and records kokoro_bus.monitor,
reporting events as JSON lines on stdout and taking ``play i`` / ``stop`` on stdin."""
from __future__ import annotations

import json
import queue
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from tests.rigs.virtual_audio.signals import find_clip, first_loud


def run_plan(plan_path: str) -> int:
    import sounddevice as sd

    plan = json.loads(Path(plan_path).read_text())
    rate, block = plan["rate"], plan["block"]
    clips = [np.load(c["path"]).astype(np.float32) for c in plan["clips"]]
    rules = plan["clips"]
    total = int(plan["duration"] * rate)
    rec = np.zeros((total + block, 2), np.int16)
    thr_db = plan["threshold_db"]
    hold_blocks = max(1, int(round(plan["silence_hold_ms"] / 1000 * rate / block)))
    out_lat: list[float] = []
    in_lat: list[float] = []
    events: queue.SimpleQueue = queue.SimpleQueue()
    commands: queue.SimpleQueue = queue.SimpleQueue()
    st: dict[str, Any] = {
        "pos": 0, "starts": [-1] * len(clips), "ends": [-1] * len(clips), "done": [False] * len(clips),
        "armed": [r["on"] not in (None, "manual") and r["after"] is None for r in rules],
        "speaker_on": False, "quiet": 0, "last_loud": 0, "status": [], "rtt": 0, "rtt_measured": False,
        "stop": False,
    }

    def schedule(i: int, target_rec: int, now: int) -> None:
        st["starts"][i] = max(now, target_rec - st["rtt"])
        events.put({"event": "clip", "clip": i, "out_sample": st["starts"][i], "target": target_rec})

    def callback(indata, outdata, frames, ti, status):
        p = st["pos"]
        if status:
            st["status"].append((p, str(status)))
            events.put({"event": "status", "sample": p, "flags": str(status)})
        o, i_ = ti.outputBufferDacTime - ti.currentTime, ti.currentTime - ti.inputBufferAdcTime
        if 0 < o < 2 and 0 <= i_ < 2:
            out_lat.append(o)
            in_lat.append(i_)
            if not st["rtt_measured"]:
                st["rtt"] = int((np.median(out_lat[-50:]) + np.median(in_lat[-50:])) * rate)
        n = min(frames, len(rec) - p)
        if n > 0:
            rec[p: p + n] = np.clip(indata[:n] * 32768.0, -32768, 32767).astype(np.int16)
        # speaker level -> on/off events (recording clock)
        spk = indata[:, 0]
        loud = 10 * np.log10(float(np.mean(spk * spk)) + 1e-12) > thr_db
        fired = []
        if loud:
            st["quiet"] = 0
            k = np.where(np.abs(spk) > 10 ** (thr_db / 20))[0]
            st["last_loud"] = p + (int(k[-1]) + 1 if len(k) else frames)
            if not st["speaker_on"]:
                st["speaker_on"] = True
                at = p + (int(k[0]) if len(k) else 0)
                events.put({"event": "speaker_on", "sample": at})
                fired.append(("speaker_on", at))
        elif st["speaker_on"]:
            st["quiet"] += 1
            if st["quiet"] >= hold_blocks:
                st["speaker_on"] = False
                at = st["last_loud"]  # just after the last sample above the threshold
                events.put({"event": "speaker_off", "sample": at})
                fired.append(("speaker_off", at))
        for i, r in enumerate(rules):
            if st["starts"][i] >= 0:
                continue
            if r["at"] is not None:
                target = int(r["at"] * rate)
                if target - st["rtt"] < p + frames:
                    schedule(i, target, p)
            elif st["armed"][i]:
                hit = [at for kind, at in fired if kind == r["on"]]
                if r["on"] == "speaker_on" and not hit and st["speaker_on"] and st.get(f"armed_at{i}") == p:
                    hit = [p]  # already non-silent when armed
                if hit:
                    schedule(i, hit[0] + int(r["delay"] * rate), p)
        while True:
            try:
                cmd = commands.get_nowait()
            except queue.Empty:
                break
            if cmd[0] == "play" and 0 <= cmd[1] < len(clips) and st["starts"][cmd[1]] < 0:
                schedule(cmd[1], p + st["rtt"], p)
        # mix the clips due in this block
        out = np.zeros(frames, np.float32)
        for i, c in enumerate(clips):
            s = st["starts"][i]
            if s < 0 or st["done"][i] or s >= p + frames:
                continue
            a, b = max(s, p), min(s + len(c), p + frames)
            if b > a:
                out[a - p: b - p] += c[a - s: b - s]
            if s + len(c) <= p + frames:
                st["done"][i] = True
                st["ends"][i] = s + len(c)
                events.put({"event": "clip_end", "clip": i, "out_sample": s + len(c)})
                for j, r in enumerate(rules):
                    if r["after"] == i and r["on"] not in (None, "manual"):
                        st["armed"][j] = True
                        st[f"armed_at{j}"] = p + frames
        outdata[:, 0] = np.clip(out, -1.0, 1.0)
        st["pos"] = p + frames

    def read_commands():
        for line in sys.stdin:
            parts = line.split()
            if parts[:1] == ["stop"]:
                st["stop"] = True
            elif parts[:1] == ["play"] and len(parts) == 2 and parts[1].isdigit():
                commands.put(("play", int(parts[1])))
        st["stop"] = True  # parent went away

    def emit(ev):
        print(json.dumps(ev), flush=True)

    channel = plan["channel"]
    onsets: list[int | None] = [None] * len(clips)
    heads = [first_loud(c, rate, 0, -40.0, relative=True) or 0 for c in clips]

    def find_onsets(final: bool) -> None:
        """Where each clip reached the recording (the real output->mic offset), as soon as
        the search window is recorded (or with what there is, at the end)."""
        for i in range(len(clips)):
            w = st["starts"][i]
            if channel is None or w < 0 or onsets[i] is not None:
                continue
            if final or st["pos"] >= w + heads[i] + int(0.7 * rate):
                found = find_clip(rec[: st["pos"], channel], clips[i], w, rate)
                onsets[i] = -1 if found is None else found
                if found is not None:
                    st["rtt"], st["rtt_measured"] = found - w, True
                emit({"event": "clip_onset", "clip": i, "sample": found,
                      "rtt_ms": None if found is None else (found - w) / rate * 1000})

    threading.Thread(target=read_commands, daemon=True).start()
    stream = sd.Stream(samplerate=rate, blocksize=block, channels=(2, 1), dtype="float32", latency="low",
                       device=("pulse", "pulse"), callback=callback)
    st["rtt"] = int(sum(stream.latency) * rate)
    with stream:
        emit({"event": "ready", "rate": rate, "block": block,
              "stream_latency_ms": [x * 1000 for x in stream.latency]})
        end_after = plan["end_after_clips"]
        while not st["stop"] and st["pos"] < total:
            try:
                emit(events.get(timeout=0.01))
                while True:
                    emit(events.get_nowait())
            except queue.Empty:
                pass
            find_onsets(final=False)
            if end_after is not None and clips and all(st["done"]):
                if st["pos"] >= max(st["ends"]) + int(end_after * rate):
                    break
        latency = list(stream.latency)
    while True:
        try:
            emit(events.get_nowait())
        except queue.Empty:
            break
    find_onsets(final=True)
    n = min(st["pos"], len(rec))
    meta = {"out_latency_ms": float(np.median(out_lat) * 1000) if out_lat else float("nan"),
            "in_latency_ms": float(np.median(in_lat) * 1000) if in_lat else float("nan"),
            "stream_latency_ms": [x * 1000 for x in latency], "status": st["status"]}
    np.savez(plan["out"], rec=rec[:n], clip_out_starts=np.array(st["starts"], np.int64), meta=json.dumps(meta))
    emit({"event": "done", "samples": n})
    return 0
