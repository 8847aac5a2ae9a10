/* fuzz_idx.c — libFuzzer entry point for the idx target (see harness.h). */
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_idx(data, size);
    return 0;
}
