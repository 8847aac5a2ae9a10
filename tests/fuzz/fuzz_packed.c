/* fuzz_packed.c — libFuzzer entry point for the packed target (see harness.h). */
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_packed(data, size);
    return 0;
}
