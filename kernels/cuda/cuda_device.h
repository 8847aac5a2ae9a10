/* cuda_device.h — what the host code may ask of the CUDA runtime without knowing CUDA. */
#ifndef NS_CUDA_DEVICE_H
#define NS_CUDA_DEVICE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable GPUs; 0 with a reason in `why` (no driver, no device, ...). */
int cuda_device_count(char *why, size_t why_len);
/* "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" for device 0. */
int cuda_device_describe(char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
