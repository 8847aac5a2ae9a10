/* fuzz_image.c — libFuzzer entry point for the image target (see harness.h). */
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_image(data, size);
    return 0;
}
