#!/usr/bin/env bash
# Prepare a fresh Debian/Ubuntu machine: Python 3.11+ with venv, redis-server,
# and the project's virtual environment in $VENV (default .venv).
# Installs Debian packages only when run as root; otherwise names them.
set -euo pipefail

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH=${TORCH:-torch==2.13.0}

need_package() {
  local package=$1 reason=$2
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing $package ($reason)"
    if [ ! -f /tmp/.saddle-apt-updated ]; then
      apt-get update -qq && touch /tmp/.saddle-apt-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  else
    echo "error: $reason; install it with: sudo apt-get install $package" >&2
    exit 1
  fi
}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: $PYTHON is missing or older than 3.11; set PYTHON=python3.11 or newer" >&2
  exit 1
fi

if ! command -v redis-server >/dev/null; then
  need_package redis-server "redis-server is missing"
fi

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    version=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    need_package "python$version-venv" "Python's venv module is missing"
    "$PYTHON" -m venv "$VENV"
  fi
fi

stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first and pinned: the worker extra's open range then keeps this build.
  "$VENV/bin/python" -m pip install -q "$TORCH"
  "$VENV/bin/python" -m pip install -q -e ".[worker,dev]"
  touch "$stamp"
fi
