# Thin wrapper over the CMake presets. The two commands a new user needs:
#   make run    install what is missing, build, serve config/pier/staging.yaml
#   make test   install what is missing, build both presets, run the ctest suite under each
# Everything else (bench, fuzz, docker …) is here too; see README.md.

CONFIG ?= config/pier/staging.yaml
FUZZ_SECONDS ?= 30
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build build-asan run test test-default test-asan bench bench-smoke fuzz memcheck format clean

all: build

deps:
	@ci/install-deps.sh

build: deps
	@cmake --preset default >/dev/null
	@cmake --build --preset default -j $(JOBS)

build-asan: deps
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS)

run: build
	./build/default/pier --config $(CONFIG)

test-default: build
	ctest --preset default -j $(JOBS)

test-asan: build-asan
	ctest --preset asan -j $(JOBS)

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
