# Replay drivers: each harness linked with replay.c instead of libFuzzer, so the seed corpus
# (test/fuzz/corpus/<harness>), every saved crash input (test/fuzz/regressions/<harness>) and
# the seeds too slow to fuzz (test/fuzz/replay-only/<harness>) run as ordinary ctest tests
# under the default and the asan presets.
# Included from test/CMakeLists.txt (and from test/fuzz/CMakeLists.txt for the fuzz preset).
if(TARGET fuzz_session_replay)  # already defined (PIER_FUZZ and PIER_BUILD_TESTS both on)
  return()
endif()
set(PIER_FUZZ_DIR ${CMAKE_CURRENT_LIST_DIR})
foreach(harness session config json)
  add_executable(fuzz_${harness}_replay ${PIER_FUZZ_DIR}/fuzz_${harness}.c
    ${PIER_FUZZ_DIR}/replay.c ${PIER_FUZZ_DIR}/fuzz.h)
  target_compile_options(fuzz_${harness}_replay PRIVATE ${PIER_WARNINGS})
  target_compile_definitions(fuzz_${harness}_replay PRIVATE PIER_FUZZ_REPLAY)
  target_link_libraries(fuzz_${harness}_replay PRIVATE pier_core)
  if(PIER_BUILD_TESTS)
    add_test(NAME fuzz.replay.${harness}
      COMMAND fuzz_${harness}_replay ${PIER_FUZZ_DIR}/corpus/${harness}
              ${PIER_FUZZ_DIR}/regressions/${harness} ${PIER_FUZZ_DIR}/replay-only/${harness})
    set_tests_properties(fuzz.replay.${harness} PROPERTIES LABELS "unit;fuzz" TIMEOUT 120)
  endif()
endforeach()
