/* fuzz_config.c — libFuzzer entry point for the config target (see harness.h). */
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_config(data, size);
    return 0;
}
