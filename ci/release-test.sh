#!/usr/bin/env bash
# ci/release.sh against a real registry: Debian's docker-registry on a loopback port (Docker
# trusts 127.0.0.0/8 without TLS) and the image ci/image.sh built.
#
#   ci/release-test.sh [IMAGE]     (default pier:latest; run ci/image.sh first)
#
# What it proves, each a check:
#   - the version tag is the image's own `org.opencontainers.image.version` label, pushed
#     once, the same manifest as the deployed commit's tag;
#   - a second release of the same image, and a later commit that carries the same version,
#     never move the version tag;
#   - a rollback to an old image (label 0.0.1) tags 0.0.1, never the checkout's
#     CMakeLists.txt version;
#   - refused, with nothing pushed: an image whose revision label is not its tag, a version
#     label that is not X.Y.Z, a tag that is not in the registry.
# The derived images (other labels) are `FROM IMAGE` plus LABEL lines: no build of pier.
# Prints PASS/FAIL per check and `release-test: N passed, M failed`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=ci/test-lib.sh
. "$root/ci/test-lib.sh"
cd "$root"

image=${1:-pier:latest}
for need in docker-registry:docker-registry curl:curl jq:jq; do
  command -v "${need%%:*}" >/dev/null 2>&1 || "$root/ci/install-deps.sh" --only "${need#*:}"
done
docker image inspect "$image" >/dev/null 2>&1 || {
  echo "release-test: no image $image: run ci/image.sh first"
  exit 1
}
cmake_version=$(sed -nE 's/^project\(pier VERSION ([0-9][^ )]*).*/\1/p' CMakeLists.txt)

tmp=$(mktemp -d)
registry_pid=""
made=()
cleanup() {
  if [[ -n $registry_pid ]]; then
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
  fi
  ((${#made[@]})) && docker rmi -f "${made[@]}" >/dev/null 2>&1
  # and every tag ci/release.sh pulled or made under the test registry's name
  if [[ -n ${repo:-} ]]; then
    docker images --format '{{.Repository}}:{{.Tag}}' | grep "^$repo:" | xargs -r docker rmi -f >/dev/null 2>&1
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

port=""
for _ in $(seq 1 200); do
  p=$((20000 + RANDOM % 12000))
  if port_free "$p"; then
    port=$p
    break
  fi
done
[[ -n $port ]] || {
  echo "release-test: no free port"
  exit 1
}
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$tmp/registry" "$port" >"$tmp/registry.yml"
docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 1 50); do
  curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && break
  sleep 0.1
done
repo=127.0.0.1:$port/pier

# digest TAG: the registry's manifest digest of repo:TAG, or nothing.
digest() {
  curl -s -o /dev/null -D - --head \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://127.0.0.1:$port/v2/pier/manifests/$1" | tr -d '\r' | sed -n 's/^docker-content-digest: //Ip'
}
tags() { curl -s "http://127.0.0.1:$port/v2/pier/tags/list" | jq -r '(.tags // [])[]' | sort | xargs; }
# derived NAME REVISION VERSION: IMAGE with those two labels, pushed as repo:NAME.
derived() {
  printf 'FROM %s\nLABEL org.opencontainers.image.revision="%s" org.opencontainers.image.version="%s"\n' \
    "$image" "$2" "$3" | docker build -q -t "$repo:$1" - >"$tmp/build.log" 2>&1
  made+=("$repo:$1")
  docker push -q "$repo:$1" >/dev/null
}
# release TAG: ci/release.sh against the test registry; output in $tmp/out, status in $rc.
release() {
  rc=0
  docker rmi "$repo:$1" >/dev/null 2>&1 || true # as on a fresh runner: it must pull
  "$root/ci/release.sh" "$repo" "$1" >"$tmp/out" 2>&1 || rc=$?
  sed 's/^/    | /' "$tmp/out"
}

revision=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$image")
version=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' "$image")
check "$image has a revision label (a full commit SHA: $revision)" grep -qxE '[0-9a-f]{40}' <<<"$revision"
check "$image has a version label ($version)" grep -qxE '[0-9]+\.[0-9]+\.[0-9]+' <<<"$version"

# 1. The first production deploy of a version: the version tag is made.
docker tag "$image" "$repo:$revision"
made+=("$repo:$revision")
docker push -q "$repo:$revision" >/dev/null
release "$revision"
check "release of $revision exits 0 and made $version" \
  bash -c "test $rc = 0 && grep -qx 'created=true' '$tmp/out' && grep -qx 'version=$version' '$tmp/out'"
first=$(digest "$revision")
check "the registry's $version is the deployed image (${first:-no digest})" \
  test -n "$first" -a "$(digest "$version")" = "$first"

# 2. The same image again (a redeploy): nothing moves.
release "$revision"
check "a second release of the same image changes nothing" \
  bash -c "test $rc = 0 && grep -qx 'created=false' '$tmp/out' && grep -q 'is this image already' '$tmp/out'"

# 3. A later commit that still says the same version: the tag stays on the first.
later=$(printf 'b%.0s' $(seq 1 40))
derived "$later" "$later" "$version"
release "$later"
check "a later commit with the same version: exit 0, the tag is not moved" \
  bash -c "test $rc = 0 && grep -qx 'created=false' '$tmp/out' && grep -q 'not moved' '$tmp/out'"
check "the registry's $version is still the first image" test "$(digest "$version")" = "$first"

# 4. A rollback to an old image: its own version, never the checkout's.
old=$(printf 'c%.0s' $(seq 1 40))
derived "$old" "$old" 0.0.1
release "$old"
check "a rollback to an image labelled 0.0.1 tags 0.0.1 (CMakeLists.txt says $cmake_version)" \
  bash -c "test $rc = 0 && grep -qx 'version=0.0.1' '$tmp/out' && grep -qx 'created=true' '$tmp/out'"
check "0.0.1 is the old image; $version did not move" \
  test "$(digest 0.0.1)" = "$(digest "$old")" -a "$(digest "$version")" = "$first"

# 5. Refusals: nothing is pushed.
before=$(tags)
liar=$(printf 'd%.0s' $(seq 1 40))
derived "$liar" "$(printf 'e%.0s' $(seq 1 40))" 7.7.7
release "$liar"
check "an image whose revision label is not its tag is refused" \
  bash -c "test $rc = 1 && grep -q 'says it was built from' '$tmp/out'"
badver=$(printf 'f%.0s' $(seq 1 40))
derived "$badver" "$badver" main
release "$badver"
check "a version label that is not X.Y.Z is refused" \
  bash -c "test $rc = 1 && grep -q \"carries version 'main'\" '$tmp/out'"
release "$(printf 'a%.0s' $(seq 1 40))"
check "a tag that is not in the registry is refused" bash -c "test $rc = 1 && grep -q 'is not in the registry' '$tmp/out'"
after=$(tags)
check "the refusals pushed no tag (tags: $after)" test "$(sed "s/ *$liar//; s/ *$badver//" <<<"$after")" = "$(sed "s/ *$liar//; s/ *$badver//" <<<"$before")"
check "no 7.7.7 and no 'main' version tag" bash -c "! grep -qwE '7\\.7\\.7|main' <<<'$after'"

# 6. A registry that does not answer is never read as "not there" (ci/registry-has.sh), and
# a release then tags nothing.
check "registry-has: a tag that is there -> 0" "$root/ci/registry-has.sh" "$repo:$version"
rc=0
"$root/ci/registry-has.sh" "$repo:0.9.9" 2>"$tmp/has.err" || rc=$?
check "registry-has: a tag that is not there -> 1 (got $rc)" test "$rc" = 1
kill "$registry_pid" 2>/dev/null || true
wait "$registry_pid" 2>/dev/null || true
registry_pid=""
rc=0
"$root/ci/registry-has.sh" "$repo:0.9.9" 2>"$tmp/has.err" || rc=$?
check "registry-has: the registry down -> 2, not 'absent' (got $rc: $(head -c 120 "$tmp/has.err"))" test "$rc" = 2
rc=0
"$root/ci/release.sh" "$repo" "$revision" >"$tmp/out" 2>&1 || rc=$?
sed 's/^/    | /' "$tmp/out"
check "with the registry down the release is refused and tags nothing" \
  bash -c "test $rc = 1 && ! grep -q '^created=' '$tmp/out'"

echo "release-test: $pass passed, $fail failed"
((fail == 0))
