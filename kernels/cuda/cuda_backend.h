/* cuda_backend.h — the CUDA kernel tables and the few switches and probes the C side
 * may use without knowing CUDA. Built only when NS_HAVE_CUDA is defined.
 *
 * Both tables run every kernel on one compute stream and copy the loader's batches
 * on a second, copy stream (backend.h, struct copy_stage); both streams are made on
 * device 0 by the first cuda_backend_get. */
#ifndef NS_CUDA_BACKEND_H
#define NS_CUDA_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "backend.h"

/* The table of flavour `fl` ("cuda-loop", "cuda-vectorized"), after making the
 * context on device 0 (streams, cuBLAS, cuDNN) on the first call. NULL with err_set
 * when there is no usable GPU or the context can't be made; a context that fails
 * partway frees what it made. cuDNN is optional: when it can't be initialised the
 * context is made without it (one line on stderr says why) and the convolutions use
 * im2col + cuBLAS. */
const struct backend *cuda_backend_get(enum kernel_flavour fl);

/* The tables themselves; use them only after cuda_backend_get succeeded. */
extern const struct backend cuda_loop_backend;
extern const struct backend cuda_vectorized_backend;

/* TF32 tensor cores for the vectorized table's cuBLAS gemms and cuDNN convolutions.
 * Off by default: results then match the CPU to float32 tolerance. On, they differ
 * by about 1e-3 relative and run faster on Ampere and newer. */
void cuda_set_tf32(bool on);
bool cuda_tf32(void);

/* Kernels can't return errors (backend.h). The first CUDA, cuBLAS or cuDNN call that
 * fails inside an entry is recorded here, process-wide, with the call, file and line
 * (and printed once to stderr); the thread that made the call also gets it as
 * err_get(). NULL when nothing failed since the start or the last clear. */
const char *cuda_backend_error(void);
void cuda_backend_clear_error(void);
/* Waits for the compute stream (not the copy stream, whose copy in flight is the
 * next batch), then 0, or -1 with err_set naming the first recorded error: a
 * trainer calls it once per step to stop on a device fault. */
int cuda_backend_check(void);

/* ---- for tests and benchmarks ---- */

/* Queues a kernel on the compute stream that spins for about `us` microseconds:
 * an artificially slow compute step. */
void cuda_spin_us(unsigned us);
/* Queues on the compute stream: *out (device uint32) = sum over i of
 * bytes[i] * (i % 251 + 1), modulo 2^32. cuda_checksum_host computes the same. */
void cuda_checksum_u8(const uint8_t *dev_bytes, size_t n, uint32_t *dev_out);
uint32_t cuda_checksum_host(const uint8_t *bytes, size_t n);
/* The vectorized im2col convolution (a CUDNN=0 build, or where cuDNN fell back)
 * works on as many images at a time as fit in this many bytes of workspace (at least
 * one); default 64 MiB. Tests set it small to cross chunk boundaries. No effect on
 * convolutions cuDNN runs. */
void cuda_set_conv_chunk_bytes(size_t bytes);
/* Whether the vectorized convolution uses cuDNN now: false in a CUDNN=0 build, before
 * the context is made, and once cuDNN could not be initialised or failed in a way no
 * shape escapes (a sub-library missing, versions that don't match). A single shape
 * cuDNN can't plan or run falls back to im2col + cuBLAS without changing this. */
bool cuda_has_cudnn(void);

/* ---- for tests only: never call these in a program that trains ---- */

/* Frees the context (streams, cuBLAS and cuDNN handles, scratch) and forgets the
 * first cuda_backend_get's result, so that the next call makes the context again.
 * Nothing made on the old one (buffers, events) may be used afterwards. */
void cuda_backend_reset_for_tests(void);
/* The next cuDNN step `at` fails as if cuDNN had returned `status` (a cudnnStatus_t
 * value: 3000 is CUDNN_STATUS_NOT_SUPPORTED, 1008 CUDNN_STATUS_SUBLIBRARY_LOADING_
 * FAILED), so that a GPU can exercise the fallback to im2col + cuBLAS: the next
 * context's cudnnCreate, the next shape's plan, or the next convolution cuDNN runs.
 * No effect in a build without cuDNN. */
enum cuda_dnn_step { CUDA_DNN_AT_INIT, CUDA_DNN_AT_PLAN, CUDA_DNN_AT_CALL };
void cuda_dnn_fail_next_for_tests(enum cuda_dnn_step at, int status);

#ifdef __cplusplus
}
#endif
#endif
