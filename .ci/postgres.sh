#!/usr/bin/env bash
# Make Debian's PostgreSQL server binaries available for tests/test_sweep_postgres.py (which starts its own
# throwaway cluster on a free loopback port). Installs the `postgresql` package only when it is missing.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null; then
    echo "postgres.sh: PostgreSQL server binaries present: $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | tail -1)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "postgres.sh: installing Debian's postgresql package ..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql > /dev/null
compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null || { echo "postgres.sh: install failed" >&2; exit 1; }
echo "postgres.sh: installed $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | tail -1)"
