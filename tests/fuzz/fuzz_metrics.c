/* fuzz_metrics.c — libFuzzer entry point for the metrics target (see harness.h). */
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_metrics(data, size);
    return 0;
}
