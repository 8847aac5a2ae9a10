/* emu.h — the emulated CUDA device's settings, for tests (C and C++).
 * Built only with `make CUDA=emu`, where NS_EMU is 1; see cuda_runtime.h here. */
#ifndef NS_EMU_H
#define NS_EMU_H

#include <stddef.h>
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

/* Failure injection, for tests of cleanup paths: the emulated API call named `api`
 * ("cudaStreamCreateWithFlags", "cublasCreate", "cudaMalloc", ...) fails on its
 * (after+1)-th call from now, once, with the error a real one could give (out of
 * memory for the CUDA runtime's; CUBLAS_STATUS_ALLOC_FAILED for cublasCreate,
 * CUBLAS_STATUS_NOT_INITIALIZED for the other cuBLAS calls). A later call replaces
 * the pending one; api NULL cancels it. The calls that can fail are those whose
 * emu.cpp function starts with emu_fails. */
void emu_fail_call(const char *api, int after);
/* What is alive on the emulated device now: streams, cuBLAS handles, and bytes of
 * device memory (cudaMalloc'd, not yet freed). Any pointer may be NULL. */
void emu_live_objects(int *streams, int *blas_handles, size_t *device_bytes);
/* For emu.cpp's API functions: whether this call of `api` is the one emu_fail_call
 * chose; otherwise the call is counted as made. */
int emu_fails(const char *api);

#ifdef __cplusplus
}
#endif
#endif
