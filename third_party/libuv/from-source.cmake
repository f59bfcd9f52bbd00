# libuv built from Debian's source package (included by CMakeLists.txt when
# PIER_LIBUV_FROM_SOURCE is ON; the tsan preset sets it).
#
# Why: ThreadSanitizer only sees memory accesses and synchronisation in code compiled with
# -fsanitize=thread. Every pier callback runs under uv_run, and Debian's libuv1 is not
# instrumented: its raw close(2) syscalls (uv__close_nocancel) are invisible to TSan, which then
# took every reused descriptor number for a race, and the only way to silence that was a
# suppression matching the whole library, which also hid every race in pier's own callbacks.
# Built here with pier's compiler and flags, libuv closes descriptors through close(), which
# TSan intercepts, and its atomics and locks are seen: no suppression is needed.
#
# What: the orig tarball and the Debian packaging of libuv1 at the version Debian 12's
# libuv1-dev installs, from deb.debian.org, each checked against the SHA-256 that the source
# package's .dsc lists; the Debian patches (debian/patches/series) applied in order; libuv's own
# CMake build of the static library uv_a, with CMAKE_C_COMPILER, CMAKE_C_FLAGS and
# CMAKE_BUILD_TYPE passed through. Everything happens at build time, under the build directory
# (_deps/libuv): the archives are downloaded once and the library is built once per build tree.
# No libuv source is kept in this repository.
#
# PIER_LIBUV_BUILT names the _deps/libuv directory of another build tree that has already built
# it with the same flags (the planted-race test's second tree uses its parent's); nothing is
# downloaded or built then.
set(PIER_LIBUV_DEBIAN_VERSION "1.44.2-1+deb12u1" CACHE STRING "Debian version of libuv1 to build")
set(PIER_LIBUV_ORIG_SHA256 "d79b4b06ef04be85fb890bf39d55942cc64c2e15fd14eaa32dae5dce94485484"
    CACHE STRING "SHA-256 of libuv1_<upstream>.orig.tar.gz (from the .dsc)")
set(PIER_LIBUV_DEBIAN_SHA256 "14fc605e7d1520137416fd8c097b58a191be9b07bdbb406f7b39c7894b7d66a5"
    CACHE STRING "SHA-256 of libuv1_<version>.debian.tar.xz (from the .dsc)")
set(PIER_DEBIAN_POOL "https://deb.debian.org/debian/pool/main"
    CACHE STRING "Debian archive pool the source package is downloaded from (a mirror works)")
set(PIER_LIBUV_BUILT "" CACHE PATH "_deps/libuv of a build tree that already built libuv")

string(REGEX REPLACE "-[^-]*$" "" _uv_upstream "${PIER_LIBUV_DEBIAN_VERSION}")
find_package(Threads REQUIRED)

# The version libuv1-dev installs, when pkg-config knows it: the one to build.
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PIER_PC_UV_SYSTEM QUIET libuv)
  if(PIER_PC_UV_SYSTEM_FOUND AND NOT PIER_PC_UV_SYSTEM_VERSION VERSION_EQUAL _uv_upstream)
    message(WARNING "libuv: building ${_uv_upstream} from source, but this system's libuv1-dev is "
      "${PIER_PC_UV_SYSTEM_VERSION}; set PIER_LIBUV_DEBIAN_VERSION and the two SHA-256 values "
      "from that version's .dsc to build the same one")
  endif()
endif()

if(PIER_LIBUV_BUILT)
  set(_uv_prefix "${PIER_LIBUV_BUILT}")
  if(NOT EXISTS "${_uv_prefix}/build/libuv_a.a" OR NOT EXISTS "${_uv_prefix}/source/include/uv.h")
    message(FATAL_ERROR "libuv: PIER_LIBUV_BUILT=${_uv_prefix} holds no built libuv "
      "(build/libuv_a.a, source/include/uv.h)")
  endif()
else()
  set(_uv_prefix "${CMAKE_BINARY_DIR}/_deps/libuv")
endif()
set(_uv_src "${_uv_prefix}/source")
set(_uv_build "${_uv_prefix}/build")

add_library(pier_uv_from_source STATIC IMPORTED GLOBAL)
set_target_properties(pier_uv_from_source PROPERTIES
  IMPORTED_LOCATION "${_uv_build}/libuv_a.a"
  INTERFACE_INCLUDE_DIRECTORIES "${_uv_src}/include")
# libuv-static.pc's Libs.private on Linux
target_link_libraries(pier_uv INTERFACE pier_uv_from_source Threads::Threads ${CMAKE_DL_LIBS} rt)

if(PIER_LIBUV_BUILT)
  message(STATUS "libuv: ${PIER_LIBUV_DEBIAN_VERSION} already built in ${_uv_prefix}")
  return()
endif()

find_program(PIER_PATCH patch)
if(NOT PIER_PATCH)
  message(FATAL_ERROR "libuv: building from source needs `patch` (Debian: apt-get install patch)")
endif()

include(ExternalProject)
set(_uv_pool "${PIER_DEBIAN_POOL}/libu/libuv1")
set(_uv_debian_tar "libuv1_${PIER_LIBUV_DEBIAN_VERSION}.debian.tar.xz")
# The imported target's include directory must exist when CMake generates the build.
file(MAKE_DIRECTORY "${_uv_src}/include")
ExternalProject_Add(pier_libuv_source
  PREFIX "${_uv_prefix}"
  SOURCE_DIR "${_uv_src}"
  STAMP_DIR "${_uv_prefix}/stamp"
  TMP_DIR "${_uv_prefix}/tmp"
  BINARY_DIR "${_uv_build}"
  DOWNLOAD_DIR "${_uv_prefix}/download"
  URL "${_uv_pool}/libuv1_${_uv_upstream}.orig.tar.gz"
  URL_HASH SHA256=${PIER_LIBUV_ORIG_SHA256}
  DOWNLOAD_EXTRACT_TIMESTAMP OFF
  TLS_VERIFY ON
  PATCH_COMMAND "${CMAKE_COMMAND}"
    "-DURL=${_uv_pool}/${_uv_debian_tar}"
    "-DFILE=${_uv_prefix}/download/${_uv_debian_tar}"
    "-DSHA256=${PIER_LIBUV_DEBIAN_SHA256}"
    "-DPATCH=${PIER_PATCH}"
    "-DSOURCE_DIR=<SOURCE_DIR>"
    -P "${CMAKE_CURRENT_LIST_DIR}/debian-patches.cmake"
  CMAKE_ARGS
    "-DCMAKE_C_COMPILER=${CMAKE_C_COMPILER}"
    "-DCMAKE_C_COMPILER_LAUNCHER=${CMAKE_C_COMPILER_LAUNCHER}"
    "-DCMAKE_C_FLAGS=${CMAKE_C_FLAGS}"
    "-DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE}"
    -DBUILD_TESTING=OFF
    -DLIBUV_BUILD_TESTS=OFF
    -DLIBUV_BUILD_BENCH=OFF
  BUILD_COMMAND "${CMAKE_COMMAND}" --build <BINARY_DIR> --target uv_a
  BUILD_BYPRODUCTS "${_uv_build}/libuv_a.a"
  INSTALL_COMMAND ""
  LOG_DOWNLOAD ON
  LOG_CONFIGURE ON
  LOG_BUILD ON
  LOG_OUTPUT_ON_FAILURE ON)
add_dependencies(pier_uv_from_source pier_libuv_source)
message(STATUS "libuv: ${PIER_LIBUV_DEBIAN_VERSION} from Debian's source package, built with "
  "\"${CMAKE_C_FLAGS}\" in ${_uv_prefix}")
