#!/usr/bin/env bash
# The acceptance tests include a handset/FSP client written in Python from
# CONTRACT.md alone; it needs the `cryptography` package.
set -euo pipefail
if python3 -c 'import cryptography' 2>/dev/null; then exit 0; fi
echo ">> installing Python cryptography"
if python3 -m pip --version >/dev/null 2>&1; then
  python3 -m pip install --quiet cryptography && exit 0
fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-cryptography >/dev/null
