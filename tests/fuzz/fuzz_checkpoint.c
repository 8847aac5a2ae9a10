/* fuzz_checkpoint.c — libFuzzer entry point for the checkpoint target (see harness.h). */
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_checkpoint(data, size);
    return 0;
}
