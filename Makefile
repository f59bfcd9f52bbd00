# Thin wrapper over the CMake presets. The two commands a new user needs:
#   make run    install what is missing, build, serve config/pier/staging.yaml
#   make test   install what is missing, build both presets, run the ctest suite under each
# Everything else (bench, fuzz, docker …) is here too; see README.md.

CONFIG ?= config/pier/staging.yaml
FUZZ_SECONDS ?= 30
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

# Every tool a ctest test runs besides pier (test_nginx, test_prometheus and test_ops'
# promtool, test_slowhttptest, test_wakeups' strace): installed by `make test`, so no test is
# skipped.
TEST_TOOLS = nginx prometheus slowhttptest strace

.PHONY: all deps test-deps build build-asan build-tsan run test test-default test-asan tsan bench bench-smoke fuzz memcheck format clean

all: build

deps:
	@ci/install-deps.sh

test-deps:
	@ci/install-deps.sh $(TEST_TOOLS)

build: deps
	@cmake --preset default >/dev/null
	@cmake --build --preset default -j $(JOBS)

build-asan: deps
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS)

# The tsan preset builds libuv from Debian's source package, downloaded over HTTPS from
# deb.debian.org on the first build (third_party/libuv/from-source.cmake).
build-tsan:
	@ci/install-deps.sh ca-certificates patch
	@cmake --preset tsan >/dev/null
	@cmake --build --preset tsan -j $(JOBS)

run: build
	./build/default/pier --config $(CONFIG)

# ci/ctest.sh fails on a skipped test as well as on a failed one.
test-default: build test-deps
	ci/ctest.sh default -j $(JOBS)

test-asan: build-asan test-deps
	ci/ctest.sh asan -j $(JOBS)

# ThreadSanitizer: unit and integration tests (not the slow ones), pier with workers: 2, and
# tsan.planted_race (a racy build of pier that TSan must report).
tsan: build-tsan test-deps
	ci/ctest.sh tsan -j $(JOBS)

test: test-default test-asan

bench: build
	test/bench/run.sh

bench-smoke: build
	BENCH_SMOKE=1 test/bench/run.sh

fuzz: deps
	test/fuzz/run.sh $(FUZZ_SECONDS)

memcheck: build
	test/memcheck.sh

format:
	clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'include/*.h' 'test/*.c' 'test/*.h')

clean:
	rm -rf build
