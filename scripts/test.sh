#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: lint, unit, pipeline, app and browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
