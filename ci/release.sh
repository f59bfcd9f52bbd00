#!/usr/bin/env bash
# The release of a production deploy (deploy.yml's release job): tag the deployed image with
# the version it carries itself, once.
#
#   ci/release.sh IMAGE TAG
#
#   IMAGE  the repository, e.g. ghcr.io/owner/pier (logged in already)
#   TAG    the commit SHA the deploy ran: IMAGE:TAG is the deployed image
#
# The version is the image's own `org.opencontainers.image.version` label (ci/image.sh sets
# it from CMakeLists.txt at build time), never the checkout's CMakeLists.txt: a rollback to
# an old image can only ever name that image's own version. Refused (exit 1): an image whose
# `org.opencontainers.image.revision` label is not TAG, and a version that is not X.Y.Z.
# When IMAGE:VERSION exists already it is not moved (a version is tagged by its first
# production deploy only); the run says whether it is the same image. When the registry
# cannot say whether it exists (ci/registry-has.sh exit 2), nothing is tagged.
#
# Prints `version=...`, `commit=...` and `created=true|false` for $GITHUB_OUTPUT on stdout,
# the rest on stderr; appends a line to $GITHUB_STEP_SUMMARY when that is set.
set -euo pipefail

say() { echo "release: $*" >&2; }
refuse() {
  if [[ -n ${GITHUB_ACTIONS:-} ]]; then echo "::error title=release refused::$*" >&2; fi
  say "REFUSED: $*"
  exit 1
}
summary() { if [[ -n ${GITHUB_STEP_SUMMARY:-} ]]; then printf '%s\n' "$*" >>"$GITHUB_STEP_SUMMARY"; fi; }

(($# == 2)) || {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
}
image=$1 tag=$2
[[ $image =~ ^[a-z0-9]+([._:/-][a-z0-9]+)*$ ]] || {
  say "'$image' is not an image repository name"
  exit 2
}
[[ $tag =~ ^[0-9a-f]{40}$ ]] || {
  say "'$tag' is not a full commit SHA"
  exit 2
}

has=$(dirname "${BASH_SOURCE[0]}")/registry-has.sh
rc=0
"$has" "$image:$tag" || rc=$?
((rc != 1)) || refuse "$image:$tag is not in the registry"
((rc != 2)) || refuse "cannot pull $image:$tag"
label() { docker image inspect -f "{{index .Config.Labels \"$1\"}}" "$image:$tag"; }
revision=$(label org.opencontainers.image.revision)
version=$(label org.opencontainers.image.version)
[[ $revision == "$tag" ]] ||
  refuse "$image:$tag says it was built from '${revision:-no revision label}', not $tag: it is not released"
[[ $version =~ ^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$ ]] ||
  refuse "$image:$tag carries version '${version:-no version label}', not X.Y.Z: it is not released"

id_of() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
digest=$(docker image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$image:$tag" |
  sed -n "s|^$image@||p" | head -n 1)

created=false
rc=0
"$has" "$image:$version" || rc=$?
((rc != 2)) || refuse "cannot tell whether $image:$version exists: nothing is tagged"
if ((rc == 0)); then
  was=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$image:$version")
  if [[ $(id_of "$image:$version") == "$(id_of "$image:$tag")" ]]; then
    say "$image:$version is this image already"
    summary "Release: \`$image:$version\` is this image already."
  else
    say "$image:$version exists (commit ${was:-unknown}) and is not moved; $tag ships under the same version: bump project(pier VERSION) and CHANGELOG.md for the next release"
    if [[ -n ${GITHUB_ACTIONS:-} ]]; then
      echo "::warning title=version not moved::$image:$version is commit ${was:-unknown}; this deploy ($tag) carries the same version" >&2
    fi
    summary "Release: \`$image:$version\` exists (commit \`${was:-unknown}\`) and was not moved; this deploy (\`$tag\`) carries the same version."
  fi
else
  docker tag "$image:$tag" "$image:$version"
  docker push -q "$image:$version" >/dev/null || refuse "docker push $image:$version failed"
  created=true
  say "$image:$version = $image:$tag${digest:+@$digest}"
  summary "Release: \`$image:$version\` = \`$image:$tag\`${digest:+ (\`$digest\`)}."
fi
printf 'version=%s\ncommit=%s\ncreated=%s\n' "$version" "$revision" "$created"
