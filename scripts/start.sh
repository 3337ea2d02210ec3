#!/usr/bin/env bash
# One command: install, then open the dashboard on the built-in demo project.
#   bash scripts/start.sh [--port 8501] [--data-root DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
port=8501
data_root=${IMPARTIAL_DATA:-impartial-data}
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --data-root) data_root=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
echo "ImPartial dashboard: http://localhost:$port  (projects in $data_root)"
exec .venv/bin/python -m streamlit run app.py --server.port "$port" -- --data-root "$data_root" --demo
