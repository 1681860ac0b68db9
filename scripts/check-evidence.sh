#!/usr/bin/env bash
# check-evidence.sh BUNDLE.json CA.pem AUDIT.pem
#
# Checks a tmcs evidence bundle (GET /v1/audit/evidence/{request_id},
# CONTRACT §13) with standard tools: the openssl CLI for every signature,
# the chain and the OCSP response, sha256sum for the hashes, python3 only to
# read JSON members (and to write one event in RFC 8785 form). It checks the
# request.signed event; `tmcs audit evidence verify` checks every event and
# more. docs/audit.md explains each step. Exit 0 when all pass.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 BUNDLE.json CA.pem AUDIT.pem" >&2; exit 2; }
bundle=$1 ca=$2 audit=$3
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT

# q EXPR: a Python expression over the bundle `b`, printed.
q() { python3 -c "import json,sys; b=json.load(open(sys.argv[1])); print($1)" "$bundle"; }
# sha256hex: SHA-256 of stdin, hex.
sha256hex() { sha256sum | cut -d' ' -f1; }
# hex2bin HEX: the bytes.
hex2bin() { printf "$(sed 's/../\\x&/g' <<<"$1")"; }
signed='[e for e in b["events"] if e["action"] == "request.signed"][0]'

# 1. The request.signed event, whose time the checks below use: its hash is
#    SHA-256 of its RFC 8785 form without "hash" (sorted members, no spaces:
#    what json.dumps makes of it).
q "json.dumps({k: v for k, v in $signed.items() if k != 'hash'}, sort_keys=True, separators=(',', ':'), ensure_ascii=False)" \
  | tr -d '\n' > "$w/event.json"
hash=$(q "$signed"'["hash"]')
[ "$(sha256hex < "$w/event.json")" = "$hash" ] || { echo "FAILED: the event's hash" >&2; exit 1; }
echo "ok: the request.signed event's hash recomputes: $hash"

# 2. The payer's signature over C verifies with the certificate's key.
q 'b["c"]' | base64 -d > "$w/c.bin"
q 'b["signature"]' | base64 -d > "$w/sig.der"
q 'b["certificate"]' > "$w/cert.pem"
openssl x509 -in "$w/cert.pem" -pubkey -noout > "$w/pub.pem"
openssl dgst -sha256 -verify "$w/pub.pem" -signature "$w/sig.der" "$w/c.bin"
echo "ok: the signature over C verifies with the payer's certificate"

# 3. The certificate chains to the CA, at the time of the signature.
q 'b["chain"]' > "$w/chain.pem"
signed_at=$(date -u -d "$(q "$signed"'["ts"]')" +%s)
openssl verify -CAfile "$ca" -untrusted "$w/chain.pem" -attime "$signed_at" "$w/cert.pem"
echo "ok: the certificate chains to the CA at the signing time"

# 4. The OCSP response: signed by the responder the CA authorised (its
#    certificate rides in the response), about this certificate, good.
q 'b["ocsp"]' | base64 -d > "$w/ocsp.der"
openssl x509 -in "$w/chain.pem" -out "$w/issuer.pem"   # the first: the issuing CA
openssl ocsp -respin "$w/ocsp.der" -issuer "$w/issuer.pem" -cert "$w/cert.pem" \
  -CAfile "$ca" -attime "$signed_at" -resp_text > "$w/ocsp.txt" 2>&1 || true
grep -q '^Response verify OK' "$w/ocsp.txt" && grep -q "cert.pem: good" "$w/ocsp.txt" || {
  cat "$w/ocsp.txt" >&2; echo "FAILED: the OCSP response" >&2; exit 1; }
grep -E 'Produced At|This Update' "$w/ocsp.txt" | sed 's/^[[:space:]]*/   /' | sort -u
echo "ok: the OCSP response verifies and says good (compare its times with the signing time $(q "$signed"'["ts"]'))"

# 5. The event's inclusion in the tree head (RFC 9162 §2.1.3.2): leaf = SHA-256(0x00 || hash),
#    node = SHA-256(0x01 || left || right).
seq=$(q "$signed"'["seq"]')
size=$(q 'b["sth"]["tree_size"]')
r=$({ printf '\x00'; hex2bin "$hash"; } | sha256hex)
fn=$((seq - 1)) sn=$((size - 1))
for p in $(q '" ".join([p for x in b["proofs"] if x["seq"] == '"$seq"' for p in x["audit_path"]])'); do
  [ "$sn" -gt 0 ] || { echo "FAILED: the inclusion proof is too long" >&2; exit 1; }
  if [ $((fn & 1)) -eq 1 ] || [ "$fn" -eq "$sn" ]; then
    r=$({ printf '\x01'; hex2bin "$p"; hex2bin "$r"; } | sha256hex)
    if [ $((fn & 1)) -eq 0 ]; then
      while [ $((fn & 1)) -eq 0 ] && [ "$fn" -ne 0 ]; do fn=$((fn >> 1)) sn=$((sn >> 1)); done
    fi
  else
    r=$({ printf '\x01'; hex2bin "$r"; hex2bin "$p"; } | sha256hex)
  fi
  fn=$((fn >> 1)) sn=$((sn >> 1))
done
[ "$sn" -eq 0 ] && [ "$r" = "$(q 'b["sth"]["root_hash"]')" ] || {
  echo "FAILED: the event's inclusion in the tree head" >&2; exit 1; }
echo "ok: event seq $seq is included in the tree head of size $size (root $r)"

# 6. The tree head is signed by the audit key.
q 'b["sth"]["sig"]' | base64 -d > "$w/sth.sig"
printf 'tmcs-sth-v1\n%s\n%s\n%s\n' "$size" "$(q 'b["sth"]["root_hash"]')" "$(q 'b["sth"]["ts"]')" > "$w/sth.msg"
openssl x509 -in "$audit" -pubkey -noout > "$w/audit_pub.pem"
openssl dgst -sha256 -verify "$w/audit_pub.pem" -signature "$w/sth.sig" "$w/sth.msg"
echo "ok: the tree head is signed by the audit key"
echo "evidence checked with openssl and sha256sum"
