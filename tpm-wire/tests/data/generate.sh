#!/usr/bin/env bash
# Regenerates the public-area fixtures of tpm-wire from a fresh swtpm:
#   ek.pub   TPM2B_PUBLIC of the RSA EK, TCG template L-1 (`tpm2_createek -G rsa`)
#   srk.pub  TPM2B_PUBLIC of the RSA-2048 SRK (the C SDK's / aziot's template)
# Needs swtpm and tpm2-tools (apt install swtpm swtpm-tools tpm2-tools).
set -euo pipefail

out="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
pid=""
cleanup() {
    if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

for tool in swtpm tpm2_createek tpm2_createprimary; do
    command -v "$tool" >/dev/null || { echo "$tool not found: apt install swtpm swtpm-tools tpm2-tools" >&2; exit 1; }
done

# Start swtpm on a free port pair (control port = port + 1, as the swtpm TCTI expects).
for _ in 1 2 3 4 5 6 7 8 9 10; do
    port=$((20000 + RANDOM % 20000))
    swtpm socket --tpm2 --tpmstate dir="$work" \
        --server type=tcp,port="$port",bindaddr=127.0.0.1 \
        --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 \
        --flags not-need-init,startup-clear >"$work/swtpm.log" 2>&1 &
    pid=$!
    sleep 0.5
    if kill -0 "$pid" 2>/dev/null; then break; fi
    wait "$pid" 2>/dev/null || true
    pid=""
done
[[ -n "$pid" ]] || { echo "swtpm did not start:" >&2; cat "$work/swtpm.log" >&2; exit 1; }
export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$port"

cd "$work"
tpm2_createek -c 0x81010001 -G rsa -u "$out/ek.pub" >/dev/null
tpm2_flushcontext -t
tpm2_createprimary -C o -G rsa2048:null:aes128cfb -g sha256 \
    -a 'restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda' \
    -c srk.ctx >/dev/null
tpm2_evictcontrol -C o -c srk.ctx 0x81000001 >/dev/null
tpm2_flushcontext -t
tpm2_readpublic -c 0x81000001 -o "$out/srk.pub" >/dev/null
echo "wrote $out/ek.pub $out/srk.pub"
