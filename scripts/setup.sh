#!/usr/bin/env bash
# Create .venv, install the pinned packages (and, with --dev, the test tools and Chromium) and this
# package (editable: the `lookalike` command).
# Safe to re-run: it skips the install when the requirements have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1
requirements=requirements.txt
[ "$dev" = 1 ] && requirements=requirements-dev.txt

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv

stamp=.venv/.installed-$(cat requirements.txt "$requirements" | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "installing $requirements into .venv (a few minutes the first time)..."
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
  touch "$stamp"
fi

# The package itself, editable, so that .venv/bin/lookalike exists and runs this checkout's code.
# Its dependencies are the requirements just installed; offline with the venv's own setuptools.
package_stamp=.venv/.package-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$package_stamp" ] || [ ! -x .venv/bin/lookalike ]; then
  isolation=--no-build-isolation
  .venv/bin/python -c "import setuptools" 2>/dev/null || isolation=""
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps $isolation -e .
  touch "$package_stamp"
fi

if [ "$dev" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian chromium for the browser test..."
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi
