#!/usr/bin/env bash
# Lists the private keys on the tmcs token of a data dir with their
# attributes (every one must show "sensitive, ... never extractable").
#
#   softhsm/list-keys.sh [DATA_DIR] [LABEL]
set -euo pipefail
data=${1:-./data}
label=${2:-tmcs}
export SOFTHSM2_CONF="$data/softhsm/softhsm2.conf"
exec pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --token-label "$label" \
  --login --pin "$(cat "$data/hsm.pin")" --list-objects --type privkey
