# Shell helpers shared by scripts/test.sh, scripts/node-sdk-test.sh and
# scripts/bench-provisioning.sh. Source it after `cd` to the repository root:
#   . scripts/lib/common.sh
# It defines functions and sets nothing else.

fail() { printf 'error: %s\n' "$*" >&2; exit 1; }
# Each step's line says how far into the run it starts (bash's SECONDS), so a slow step shows.
# Fails early, saying so, when the disk under DIR has less than GIB free: a build that runs out
# of space half-way dies as a linker "Bus error", which names nothing.
check_disk_space() { # dir gib
  local dir=$1 need=$2 probe avail
  probe=$dir
  while [[ ! -e $probe ]]; do probe=$(dirname "$probe"); done
  avail=$(df -Pk "$probe" | awk 'NR == 2 { print int($4 / 1048576) }')
  if ((avail < need)); then
    df -h "$probe" >&2
    fail "only ${avail} GiB free under $probe; the build needs about ${need} GiB (free some, or set CARGO_TARGET_DIR elsewhere)"
  fi
}
step() { printf '\n==> [%02d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

# How long apt_install waits for another apt or dpkg process (a freshly booted machine runs
# unattended upgrades) to let go of the package manager's lock.
APT_LOCK_WAIT=${APT_LOCK_WAIT:-900}

# Runs an apt-get command; while another process holds the package manager's lock, waits (up to
# APT_LOCK_WAIT seconds, saying so every 30 s) and tries again. Other failures end at once.
apt_get() {
  local sudo=() deadline=$((SECONDS + APT_LOCK_WAIT)) said=-1 out rc
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  while true; do
    rc=0
    # DPkg::Lock::Timeout makes apt itself wait for the dpkg lock; the loop also covers the
    # lists lock of `apt-get update`, which that option does not.
    out=$(DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=30 "$@" 2>&1) || rc=$?
    if [ "$rc" -eq 0 ]; then
      [ -z "$out" ] || printf '%s\n' "$out"
      return 0
    fi
    if ! grep -qE 'Could not get lock|Unable to lock|is held by process|Unable to acquire the dpkg' <<<"$out"; then
      printf '%s\n' "$out" >&2
      return "$rc"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      printf '%s\n' "$out" >&2
      printf 'error: the package manager stayed locked by another process for %s s; run the command again when it is done\n' \
        "$APT_LOCK_WAIT" >&2
      return "$rc"
    fi
    if [ $((SECONDS - said)) -ge 30 ] || [ "$said" -lt 0 ]; then
      printf 'waiting for the package manager: another apt or dpkg process holds its lock (%s)\n' \
        "$(grep -oE 'held by process [0-9]+( \([^)]*\))?' <<<"$out" | head -n 1 || true)"
      said=$SECONDS
    fi
    sleep 3
  done
}

# Installs the Debian packages named that are not installed yet.
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "system packages present: $*"
    return 0
  fi
  command -v apt-get >/dev/null || fail "apt-get not found; install these packages by hand: ${missing[*]}"
  step "installing ${missing[*]}"
  apt_get update -qq || fail "apt-get update failed"
  apt_get install -y -qq --no-install-recommends "${missing[@]}" \
    || fail "cannot install ${missing[*]} (apt-get install ${missing[*]})"
}

# Node.js 18 or later with npm, and openssl.
require_node() {
  local tool major
  for tool in node npm; do
    command -v "$tool" >/dev/null || fail "$tool not found: install Node.js 18 or later with npm \
(Debian: apt-get install nodejs npm; or Node 20 from https://nodejs.org or NodeSource)"
  done
  command -v openssl >/dev/null || fail "openssl not found (Debian: apt-get install openssl)"
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 18 ] || fail "node $(node --version) is too old: Node.js 18 or later is needed"
}

# The workspace's target directory.
target_dir() {
  cargo metadata --format-version 1 --no-deps | node -e \
    'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))'
}

# Makes the work folder $WORK (kept with KEEP_TMP=1) and a trap that stops the emulator started
# by start_emulator, shows its log when the script fails, and removes the folder.
make_work_dir() { # name
  WORK=$(mktemp -d -t "$1.XXXXXX")
  EMULATOR_PID=
  trap _cleanup_work EXIT
  trap 'exit 130' INT TERM
}

_cleanup_work() {
  local rc=$?
  if [ -n "${EMULATOR_PID:-}" ] && kill -0 "$EMULATOR_PID" 2>/dev/null; then
    kill "$EMULATOR_PID" 2>/dev/null || true
    wait "$EMULATOR_PID" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -f "$WORK/emulator.log" ]; then
    echo "--- emulator log (last 40 lines) ---" >&2
    tail -n 40 "$WORK/emulator.log" >&2
  fi
  if [ "${KEEP_TMP:-}" = 1 ]; then
    echo "work folder kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}

# Installs the official Node SDK packages pinned in dps-emulator/tests/node-sdk/package-lock.json
# into $WORK/sdk, with the named scripts from that folder beside them.
install_node_sdk() { # script.js...
  local dir=dps-emulator/tests/node-sdk name
  mkdir -p "$WORK/sdk"
  cp "$dir/package.json" "$dir/package-lock.json" "$dir/common.js" "$WORK/sdk/"
  for name in "$@"; do cp "$dir/$name" "$WORK/sdk/"; done
  (cd "$WORK/sdk" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null) \
    || fail "npm ci failed (is the npm registry reachable?)"
}

# Test certificates with openssl in $CERTS (set it first): a P-256 key per name, CA and device
# profiles with key identifiers.
cert_init() {
  mkdir -p "$CERTS"
  cat >"$CERTS/ext.cnf" <<'CNF'
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[device]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
}
cert_key() { # name
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$CERTS/$1.key.pem" 2>/dev/null
}
cert_self_signed() { # name CN
  cert_key "$1"
  openssl req -new -key "$CERTS/$1.key.pem" -subj "/CN=$2" -out "$CERTS/$1.csr"
  openssl x509 -req -in "$CERTS/$1.csr" -signkey "$CERTS/$1.key.pem" -days 2 -sha256 \
    -extfile "$CERTS/ext.cnf" -extensions ca -out "$CERTS/$1.pem" 2>/dev/null
}
cert_issue() { # name CN issuer extensions
  cert_key "$1"
  openssl req -new -key "$CERTS/$1.key.pem" -subj "/CN=$2" -out "$CERTS/$1.csr"
  openssl x509 -req -in "$CERTS/$1.csr" -CA "$CERTS/$3.pem" -CAkey "$CERTS/$3.key.pem" \
    -CAcreateserial -days 2 -sha256 -extfile "$CERTS/ext.cnf" -extensions "$4" \
    -out "$CERTS/$1.pem" 2>/dev/null
}

# Starts the emulator binary $EMULATOR with its configuration on 127.0.0.1:443 (HTTPS), :5671 (AMQP) and :8883
# (MQTT), the ports the Node SDK talks to, writing its CA to $WORK/ca.pem and its log to
# $WORK/emulator.log; waits until it is ready. Extra environment (e.g. RUST_LOG=warn) may precede.
start_emulator() { # config [VAR=value...]
  local config=$1
  shift
  env "$@" "$EMULATOR" --config "$config" --https 127.0.0.1:443 --mqtt 127.0.0.1:8883 \
    --amqp 127.0.0.1:5671 --write-ca "$WORK/ca.pem" >"$WORK/emulator.log" 2>&1 &
  EMULATOR_PID=$!
  for _ in $(seq 1 100); do
    grep -q "dps-emulator ready" "$WORK/emulator.log" && return 0
    if ! kill -0 "$EMULATOR_PID" 2>/dev/null; then
      wait "$EMULATOR_PID" 2>/dev/null || true
      EMULATOR_PID=
      grep -qi "permission denied" "$WORK/emulator.log" && fail "the emulator may not bind \
127.0.0.1:443/8883 (no privilege): the Node SDK only talks to the standard ports; run as root or: \
setcap cap_net_bind_service=+ep $EMULATOR"
      grep -qi "address already in use" "$WORK/emulator.log" && fail "127.0.0.1:443 or :8883 is \
in use by another process (another run of node-sdk-test.sh or bench-provisioning.sh?)"
      fail "the emulator exited before it was ready"
    fi
    sleep 0.1
  done
  fail "the emulator did not get ready within 10 s"
}
