/* emu.h — the emulated CUDA device's settings, for tests (C and C++).
 * Built only with `make CUDA=emu`, where NS_EMU is 1; see cuda_runtime.h here. */
#ifndef NS_EMU_H
#define NS_EMU_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The order in which a block's threads run between two barriers (or shuffles):
 * thread 0 first, the last first, or warps interleaved lane by lane (0, 32, 64, ...,
 * 1, 33, ...). Blocks run in the same order. Also from the environment,
 * NS_EMU_ORDER=forward|reversed|interleaved, read at the first launch. */
enum emu_order { EMU_FORWARD, EMU_REVERSED, EMU_INTERLEAVED };
void emu_set_order(enum emu_order o);
enum emu_order emu_get_order(void);
const char *emu_order_name(enum emu_order o);

/* Every copy a stream runs first waits this long: a late DMA engine, so that a
 * buffer reused before its copy completed is read after it changed. Default 0. */
void emu_set_copy_delay_us(unsigned us);

/* How many kernel launches, copies and block barriers the device has run (tests
 * use them to see that work really went through the emulated device). */
struct emu_counts {
    uint64_t launches, copies, barriers, fibered_blocks;
};
struct emu_counts emu_get_counts(void);

#ifdef __cplusplus
}
#endif
#endif
