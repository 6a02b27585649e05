#!/usr/bin/env bash
# Set up (if needed) and run every test: lint, unit, pipeline, page (AppTest) and browser tests.
# The page tests use the pinned artifacts, so the default pipeline runs first (a no-op when up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
export PATH="$PWD/.venv/bin:$PATH"
ruff check .
dvc repro
python -m pytest "$@"
