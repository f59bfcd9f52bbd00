#!/usr/bin/env bash
# Render the Kubernetes overlays for one pushed image, pinned by digest: what
# `kubectl apply -f` (or a GitOps repository) takes to run exactly the bytes CI tested.
#
#   ci/k8s-manifests.sh IMAGE TAG DIGEST OUTDIR
#     IMAGE   repository, e.g. ghcr.io/owner/pier
#     TAG     the tag pushed (the commit SHA)
#     DIGEST  sha256:<64 hex>, as the registry reported it
#     OUTDIR  gets pier-staging.yaml and pier-prod.yaml
#
# Each overlay is wrapped in a throwaway kustomization whose `images:` entry sets the name,
# tag and digest: the same edit `kustomize edit set image pier=IMAGE:TAG@DIGEST` makes in
# the overlay, done with kubectl alone (the checkout is left unchanged). Needs kubectl.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() {
  printf 'k8s-manifests: %s\n' "$1" >&2
  exit 2
}

[[ $# -eq 4 ]] || die "usage: ci/k8s-manifests.sh IMAGE TAG DIGEST OUTDIR"
image=$1 tag=$2 digest=$3 out=$4
[[ $image =~ ^[a-z0-9.:-]+(/[a-z0-9._-]+)+$ ]] || die "IMAGE '$image' is not a lower-case repository name"
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "TAG '$tag' is not a valid tag"
[[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || die "DIGEST '$digest' is not sha256:<64 hex digits>"
command -v kubectl >/dev/null 2>&1 || die "kubectl is not installed"

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for env in staging prod; do
  overlay=$root/config/kubernetes/overlays/$env
  # The name the overlay gives the image now (its `images:` newName), which this replaces.
  current=$(sed -n 's/^ *newName: *//p' "$overlay/kustomization.yaml" | head -n 1)
  [[ -n $current ]] || die "$overlay/kustomization.yaml has no images[].newName"
  mkdir -p "$work/$env"
  cat >"$work/$env/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$work/$env" "$overlay")
images:
  - name: $current
    newName: $image
    newTag: "$tag"
    digest: $digest
EOF
  kubectl kustomize "$work/$env" >"$out/pier-$env.yaml"
  grep -q "image: $image:$tag@$digest\$" "$out/pier-$env.yaml" ||
    die "the $env render does not name $image:$tag@$digest"
  printf 'k8s-manifests: %s/pier-%s.yaml runs %s:%s@%s\n' "$out" "$env" "$image" "$tag" "$digest"
done
