/* fuzz — the entry point every harness defines, shared by libFuzzer and the replay driver.
 *
 * Each harness (fuzz_session.c, fuzz_config.c) defines LLVMFuzzerTestOneInput. Built with
 * -fsanitize=fuzzer it is driven by libFuzzer (`make fuzz`); built with replay.c instead it
 * replays the seed corpus and every saved crash input, so ctest keeps them fixed.
 */
#ifndef PIER_FUZZ_H
#define PIER_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
