/* backend.c — picks the kernel table for a (device, flavour). */
#include <stdio.h>

#include "backend.h"
#include "error.h"

#ifdef NS_HAVE_CUDA
#include "cuda/cuda_backend.h"
#include "cuda/cuda_device.h"
#endif

const char *device_name(enum device dev) { return dev == DEV_CUDA ? "cuda" : "cpu"; }

const char *kernel_flavour_name(enum kernel_flavour fl) { return fl == KF_LOOP ? "loop" : "vectorized"; }

const struct backend *backend_get(enum device dev, enum kernel_flavour fl) {
    if (dev == DEV_CPU) return fl == KF_LOOP ? &cpu_loop_backend : &cpu_vectorized_backend;
#ifdef NS_HAVE_CUDA
    char why[256];
    if (cuda_device_count(why, sizeof why) == 0) {
        err_set("device = cuda: no usable GPU (%s); use device = cpu, or device = auto to fall "
                "back to the CPU", why);
        return NULL;
    }
    const struct backend *be = cuda_backend_get(fl);
    if (!be) err_wrap("device = cuda: ");
    return be;
#else
    err_set("device = cuda: this build has no CUDA support (nvcc was not found, or CUDA=0); "
            "rebuild with the CUDA toolkit, or use device = cpu");
    return NULL;
#endif
}

int backend_gpu_count(char *why, size_t why_len) {
#ifdef NS_HAVE_CUDA
    return cuda_device_count(why, why_len);
#else
    snprintf(why, why_len, "this build has no CUDA support (nvcc was not found, or CUDA=0)");
    return 0;
#endif
}
