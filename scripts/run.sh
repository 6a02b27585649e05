#!/usr/bin/env bash
# Set up (if needed), run the DVC pipeline on the data in params.yaml, then serve the search page.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
time dvc repro
port=${PORT:-8501}
echo "search page: http://127.0.0.1:$port"
exec streamlit run app/app.py --server.address 127.0.0.1 --server.port "$port" \
  --server.headless true --browser.gatherUsageStats false
