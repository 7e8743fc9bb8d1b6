#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine with Python 3.11, then run them.
# System packages: prometheus (promtool checks our /metrics exposition), mosquitto and its
# clients (a real broker and mosquitto_sub), mbpoll (an independent Modbus client), rsyslog (+gnutls).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_sub >/dev/null || need_apt+=(mosquitto-clients)
command -v mbpoll >/dev/null || need_apt+=(mbpoll)
command -v amtool >/dev/null || need_apt+=(prometheus-alertmanager)  # amtool checks dashboards/alertmanager/
command -v npm >/dev/null || need_apt+=(npm)  # npm installs @grafana/schema + typescript for the dashboard schema check
[ -x /usr/sbin/rsyslogd ] || need_apt+=(rsyslog)  # a real syslog collector for the syslog alert sink
dpkg -s rsyslog-gnutls >/dev/null 2>&1 || need_apt+=(rsyslog-gnutls)  # its TLS (RFC 5425) listener
command -v systemd-analyze >/dev/null || need_apt+=(systemd)  # systemd-analyze verifies the shipped unit
command -v curl >/dev/null || need_apt+=(curl)  # an independent TLS client for /metrics
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

PY=$(command -v python3.11 || command -v python3)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet ".[test]"
# Grafana's dashboard schema (TypeScript types) and the compiler that checks dashboards/grafana/*.json against it.
GRAFANA_SCHEMA=.venv/grafana-schema
[ -x "$GRAFANA_SCHEMA/node_modules/.bin/tsc" ] && [ -d "$GRAFANA_SCHEMA/node_modules/@grafana/schema" ] ||
  npm install --silent --no-save --no-audit --no-fund --ignore-scripts --prefix "$GRAFANA_SCHEMA" @grafana/schema@13.2.3 typescript@5.9.3

.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
