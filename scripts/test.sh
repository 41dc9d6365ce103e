#!/usr/bin/env bash
# Set up (idempotent), then the whole test suite: unit tests with fakes, and
# integration tests on the real models with espeak-ng speech.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
