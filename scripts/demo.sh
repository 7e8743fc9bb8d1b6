#!/usr/bin/env bash
# Set up plantwatch in .venv and run the demo: a simulated crude pumping station served over
# OPC-UA, Modbus TCP and MQTT (embedded broker), watched by the daemon. No external server needed.
# Metrics: http://127.0.0.1:9108/metrics . Stop with Ctrl-C. Other plants: --plant chemical|radiological.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(command -v python3.11 || command -v python3)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet .
exec .venv/bin/plantwatch demo "$@"
