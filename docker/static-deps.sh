#!/bin/sh
# Build stage helper for docker/Dockerfile: install the toolchain and make the static
# libraries a fully static pier links against. Runs inside the build stage (Debian), as root.
#
#   static-deps.sh musl   musl-gcc; libuv and libyaml built with musl from Debian's source
#                         packages into /opt/musl (pkg-config files written for them)
#   static-deps.sh glibc  gcc; Debian's own libuv_a.a and libyaml.a
#
# Both: cJSON's Debian source package unpacked at /opt/src/cjson (Debian ships no static
# libcjson; third_party/cjson builds it from there), llhttp from node-llhttp's sources.
# Everything comes from the configured apt mirror: nothing else is downloaded.
set -eu

libc=${1:-musl}
export DEBIAN_FRONTEND=noninteractive

# apt-get source needs deb-src entries: mirror every deb entry the image has.
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && sed -i -E 's/^Types:[[:space:]]*deb[[:space:]]*$/Types: deb deb-src/' "$f"
done
if [ -f /etc/apt/sources.list ]; then
  sed -n -E 's/^deb[[:space:]]/deb-src /p' /etc/apt/sources.list >/etc/apt/sources.list.d/pier-deb-src.list
fi

# python3: the ctest suite (test/CMakeLists.txt) requires the interpreter even for unit tests.
pkgs="build-essential cmake pkg-config dpkg-dev node-llhttp python3"
case $libc in
  musl) pkgs="$pkgs musl-tools linux-libc-dev" ;;
  glibc) pkgs="$pkgs libuv1-dev libyaml-dev" ;;
  *) echo "static-deps: unknown libc '$libc' (musl or glibc)" >&2; exit 2 ;;
esac
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $pkgs >/dev/null

mkdir -p /opt/src
cd /opt/src
sources=cjson
[ "$libc" = musl ] && sources="$sources libuv1 libyaml"
# shellcheck disable=SC2086
apt-get source -qq $sources >/dev/null 2>&1 || apt-get source $sources
mv cjson-*/ cjson
echo "static-deps: cJSON $(sed -n 's/^#define CJSON_VERSION_\(MAJOR\|MINOR\|PATCH\) //p' cjson/cJSON.h | paste -sd.) at /opt/src/cjson"

[ "$libc" = musl ] || exit 0

# musl's include directory has no kernel headers; libuv needs <linux/...>.
multiarch=$(gcc -print-multiarch)             # x86_64-linux-gnu, aarch64-linux-gnu, ...
musl_inc=/usr/include/${multiarch%-gnu*}-musl${multiarch##*-gnu}
for d in linux asm-generic; do
  [ -e "$musl_inc/$d" ] || ln -s "/usr/include/$d" "$musl_inc/$d"
done
[ -e "$musl_inc/asm" ] || ln -s "/usr/include/$multiarch/asm" "$musl_inc/asm"

prefix=/opt/musl
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
jobs=$(nproc)

for d in libuv1-*/; do uv_ver=${d#libuv1-}; uv_ver=${uv_ver%/}; mv "$d" libuv; done
cmake -S libuv -B build-uv -DCMAKE_C_COMPILER=musl-gcc -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_TESTING=OFF -DLIBUV_BUILD_TESTS=OFF -DLIBUV_BUILD_BENCH=OFF >/dev/null
cmake --build build-uv --target uv_a -j "$jobs" >/dev/null 2>&1 || cmake --build build-uv --target uv_a
cp build-uv/libuv_a.a "$prefix/lib/"
cp -r libuv/include/. "$prefix/include/"
cat >"$prefix/lib/pkgconfig/libuv-static.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: libuv-static
Version: $uv_ver
Description: libuv built with musl for a static pier
Libs: -L\${libdir} -luv_a -lpthread
Cflags: -I\${includedir}
PC

for d in libyaml-*/; do yaml_ver=${d#libyaml-}; yaml_ver=${yaml_ver%/}; mv "$d" libyaml; done
cmake -S libyaml -B build-yaml -DCMAKE_C_COMPILER=musl-gcc -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DBUILD_TESTING=OFF -DINSTALL_CMAKE_DIR=lib/cmake/yaml >/dev/null
cmake --build build-yaml --target yaml -j "$jobs" >/dev/null 2>&1 || cmake --build build-yaml --target yaml
cp build-yaml/libyaml.a "$prefix/lib/"
cp libyaml/include/yaml.h "$prefix/include/"
cat >"$prefix/lib/pkgconfig/yaml-0.1.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: LibYAML
Description: libyaml built with musl for a static pier
Version: $yaml_ver
Libs: -L\${libdir} -lyaml
Cflags: -I\${includedir}
PC

rm -rf build-uv build-yaml libuv libyaml ./*.dsc ./*.tar.*
echo "static-deps: musl libuv $uv_ver, libyaml $yaml_ver in $prefix"
