#!/usr/bin/env bash
# Build pier's container image from docker/Dockerfile and tag it.
#
#   ci/image.sh                 -> pier:<short sha> and pier:latest, version = the tag on HEAD,
#                                  else the project version from CMakeLists.txt
#   ci/image.sh v2              -> pier:v2, reporting version v2 (/version, /health, label);
#   VERSION=v2 ci/image.sh         latest is left alone (the deploy tests build v1 and v2)
#
#   IMAGE_REPO   repository name (default pier)
#   TAGS         extra tags, space separated
#   BASE_IMAGE   build stage base (default debian:bookworm-slim; ci/base-image.sh provides it)
#   LIBC         musl (default) or glibc
#   SOURCE       org.opencontainers.image.source (default: git remote origin, else the repo path)
# Prints the image size and, last, the image reference.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

repo=${IMAGE_REPO:-pier}
override=${VERSION:-${1:-}}
revision=$(git rev-parse HEAD)
short=$(git rev-parse --short HEAD)
commit=$(git rev-parse --short=12 HEAD)
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
  commit="$commit-dirty"
fi
source_url=${SOURCE:-$(git remote get-url origin 2>/dev/null || echo "file://$root")}
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)

if [[ -n $override ]]; then
  version=$override
  tags=("$repo:$override")
else
  version=$(git describe --tags --exact-match 2>/dev/null ||
    sed -nE 's/^project\(pier VERSION ([0-9][^ )]*).*/\1/p' CMakeLists.txt)
  tags=("$repo:$short" "$repo:latest")
fi
for t in ${TAGS:-}; do tags+=("$repo:$t"); done

tag_args=()
for t in "${tags[@]}"; do tag_args+=(-t "$t"); done

# The build stage's base: pulled, or made offline by ci/base-image.sh.
base=${BASE_IMAGE:-debian:bookworm-slim}
if ! docker image inspect "$base" >/dev/null 2>&1; then
  BASE_IMAGE=$base "$root/ci/base-image.sh"
fi

echo "image: building ${tags[*]} (version $version, commit $commit, libc ${LIBC:-musl})"
start=$SECONDS
docker build -f docker/Dockerfile \
  --build-arg BASE_IMAGE="$base" \
  --build-arg LIBC="${LIBC:-musl}" \
  --build-arg PIER_VERSION_STRING="$version" \
  --build-arg PIER_GIT_COMMIT="$commit" \
  --build-arg SOURCE="$source_url" \
  --build-arg REVISION="$revision" \
  --build-arg VERSION="$version" \
  --build-arg CREATED="$created" \
  "${tag_args[@]}" .
echo "image: built in $((SECONDS - start))s"

bytes=$(docker image inspect -f '{{.Size}}' "${tags[0]}")
docker image ls "$repo" --format 'table {{.Repository}}:{{.Tag}}\t{{.ID}}\t{{.Size}}' |
  grep -E "^(REPOSITORY|$(printf '%s|' "${tags[@]}" | sed 's/|$//' | sed 's/[.]/\\./g'))[[:space:]]"
echo "image: size ${tags[0]} $bytes bytes ($(awk -v b="$bytes" 'BEGIN { printf "%.2f MB", b / 1e6 }'))"
echo "${tags[0]}"
