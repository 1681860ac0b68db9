#!/usr/bin/env bash
# Creates a SoftHSM2 development token outside tmcs, for trying the HSM by
# hand or for pointing tmcs at a token it did not create itself.
#
#   softhsm/create-token.sh DIR [LABEL]
#
# Writes DIR/softhsm2.conf and DIR/tokens/, initialises token LABEL (default
# "tmcs") with random SO and user PINs in DIR/so.pin and DIR/user.pin (0600),
# and prints the settings to use. `tmcs init` does the same by itself for the
# embedded defaults (under <data>/softhsm/), so this script is optional.
set -euo pipefail
dir=${1:?usage: $0 DIR [LABEL]}
label=${2:-tmcs}
umask 077
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
conf="$dir/softhsm2.conf"
if [ ! -f "$conf" ]; then
  sed "s|@TOKENDIR@|$dir/tokens|" "$(dirname "$0")/softhsm2.conf.in" > "$conf"
fi
export SOFTHSM2_CONF="$conf"
if softhsm2-util --show-slots | grep -q "Label:[[:space:]]*$label\$"; then
  echo "token $label already exists in $dir/tokens"
  exit 0
fi
gen() { head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24; }
[ -f "$dir/so.pin" ] || gen > "$dir/so.pin"
[ -f "$dir/user.pin" ] || gen > "$dir/user.pin"
softhsm2-util --init-token --free --label "$label" \
  --so-pin "$(cat "$dir/so.pin")" --pin "$(cat "$dir/user.pin")" >/dev/null
cat <<MSG
token $label created in $dir/tokens
use it with tmcs:
  TMCS_HSM__SOFTHSM_CONF=$conf
  TMCS_HSM__TOKEN_LABEL=$label
  TMCS_HSM__PIN_FILE=$dir/user.pin
MSG
