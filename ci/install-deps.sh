#!/usr/bin/env bash
# Install Debian packages when they are missing — the one place the project's scripts do it.
# Idempotent: installs nothing when everything is present. Uses sudo when not root.
# Usage: ci/install-deps.sh [PKG …]         pier's build and test packages, plus PKG …
#        ci/install-deps.sh --only PKG …    just PKG … (what one script needs)
set -euo pipefail

packages=(build-essential cmake pkg-config git curl python3
          libuv1-dev libcjson-dev libyaml-dev node-llhttp)
if [ "${1:-}" = "--only" ]; then
    shift
    packages=()
fi
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: missing ${missing[*]} and no apt-get here; install them by hand" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo=(sudo -n)
fi
# One apt run at a time: .ci/run runs two lanes side by side, and dpkg's own lock fails at once.
if [ "$(id -u)" -eq 0 ] && command -v flock >/dev/null 2>&1 && [ -z "${PIER_INSTALL_DEPS_LOCKED:-}" ]; then
    export PIER_INSTALL_DEPS_LOCKED=1
    exec flock -w 600 /run/lock/pier-install-deps.lock "$0" --only "${missing[@]}"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
install() { "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
# Refresh the package lists first when there are none; retry once after a refresh when the
# lists are stale (an old list names package versions the mirror no longer has).
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' 2>/dev/null | head -n 1)" ]; then
    "${sudo[@]}" apt-get update -qq
fi
install 2>/dev/null || { "${sudo[@]}" apt-get update -qq && install; }
echo "install-deps: done"
