#!/usr/bin/env bash
# Set up (idempotent), then one real spoken turn on embedded defaults:
# a question spoken by espeak-ng goes through mic -> VAD -> STT -> LLM -> TTS -> player,
# and the spoken reply is written to out/reply.wav. Extra args go to `talk`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
mkdir -p .cache/demo out
q=.cache/demo/question.wav
[ -s "$q" ] || espeak-ng -v en-us -s 150 -w "$q" "Hello! What is the capital of France?"
exec .venv/bin/kokoro-engine talk --input "$q" --output out/reply.wav "$@"
