#!/usr/bin/env bash
# Provide the base image the Dockerfiles build FROM (debian:bookworm-slim) on a machine that
# cannot pull it. In order:
#   1. the image is already there            -> nothing to do;
#   2. `docker pull` works                    -> use the real one;
#   3. a cached rootfs tarball exists         -> `docker import` it (seconds);
#   4. otherwise debootstrap --variant=minbase bookworm from the apt mirror this machine is
#      configured with, copy the host's apt sources in (so apt-get works inside builds),
#      trim it like the -slim image, cache the tarball, `docker import` it (minutes).
#
#   BASE_IMAGE      tag to provide (default debian:bookworm-slim)
#   PIER_BASE_CACHE where the rootfs tarball is kept (default /var/cache/pier-base)
#   PIER_BASE_FORCE=1  rebuild the tarball even when cached
set -euo pipefail

image=${BASE_IMAGE:-debian:bookworm-slim}
suite=bookworm
cache=${PIER_BASE_CACHE:-/var/cache/pier-base}
force=${PIER_BASE_FORCE:-0}

say() { printf 'base-image: %s\n' "$*"; }

apt_install() { "$(dirname "${BASH_SOURCE[0]}")/install-deps.sh" --only "$@"; }
# The first mirror URI serving "$suite" in the host's apt sources (deb822 *.sources or
# one-line *.list).
host_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk -v suite="$suite" '
      function flush() { if (types ~ /(^| )deb( |$)/ && suites ~ ("(^| )" suite "( |$)") && uri != "") { print uri; found = 1; exit } types = suites = uri = "" }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]*#/ { next }
      tolower($1) == "types:"  { $1 = ""; types = $0 }
      tolower($1) == "suites:" { $1 = ""; suites = $0 }
      tolower($1) == "uris:"   { uri = $2 }
      END { if (!found) flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    awk -v suite="$suite" '
      $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == suite) { print $i; exit } }' "$f"
  done
}

if [[ $force != 1 ]] && docker image inspect "$image" >/dev/null 2>&1; then
  say "$image is present"
  exit 0
fi

if [[ $force != 1 ]] && timeout 60 docker pull -q "$image" >/dev/null 2>&1; then
  say "pulled $image"
  exit 0
fi

mirror=$(host_mirror | head -n 1)
if [[ -z $mirror ]]; then
  say "no apt source for $suite found in /etc/apt; cannot debootstrap" >&2
  exit 1
fi
arch=$(dpkg --print-architecture)
# Bump recipe when the customisation below changes: the cached tarball is then rebuilt.
recipe=2
key=$(printf '%s %s %s %s' "$recipe" "$suite" "$arch" "$mirror" | sha256sum | cut -c1-12)
tarball=$cache/$suite-minbase-$arch-$key.tar

if [[ $force == 1 || ! -s $tarball ]]; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap"
    apt_install debootstrap
  fi
  mkdir -p "$cache"
  rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  cleanup() { rm -rf --one-file-system "$rootfs" "$tarball.partial"; }
  trap cleanup EXIT
  keyring=()
  if [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]]; then
    keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
  fi
  say "debootstrap --variant=minbase $suite from $mirror (takes a few minutes)"
  start=$SECONDS
  debootstrap --variant=minbase "${keyring[@]}" "$suite" "$rootfs" "$mirror" \
    >"$cache/debootstrap.log" 2>&1 || { tail -n 30 "$cache/debootstrap.log" >&2; exit 1; }
  say "debootstrap took $((SECONDS - start))s"

  # apt inside the image uses exactly what the host uses (mirror, suites, keyrings).
  rm -f "$rootfs/etc/apt/sources.list"
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    mkdir -p "$rootfs$(dirname "$f")"
    cp "$f" "$rootfs$f"
    # Keyrings named by Signed-By (deb822) or signed-by= (one-line) must exist inside too.
    grep -hoiE '(signed-by[:=] *)[^] ,]+' "$f" | sed -E 's/^[Ss]igned-[Bb]y[:=] *//' | while read -r k; do
      if [[ -f $k && ! -f $rootfs$k ]]; then
        mkdir -p "$rootfs$(dirname "$k")"
        cp "$k" "$rootfs$k"
      fi
    done || true
  done

  # Trim it the way the official -slim image is trimmed: no docs, man pages or locales
  # from later installs, no package lists or caches in the layer.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
CFG
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
  echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  # Packages installed during a build must not try to start their services (nginx would).
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/tmp/* "$rootfs"/var/tmp/*
  : >"$rootfs/etc/hostname"
  : >"$rootfs/etc/resolv.conf"

  tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  say "cached $tarball ($(du -h "$tarball" | cut -f1))"
fi

docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' \
  --message "debootstrap --variant=minbase $suite $mirror" \
  "$tarball" "$image" >/dev/null
say "imported $image from $tarball ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
