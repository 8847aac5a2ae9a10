// cuda_kernels.h — index arithmetic the CUDA kernels of both flavours share, on
// top of kernels/math.h. Host+device like math.h, so it could move there (and the
// CPU would run it too) without a change.
#ifndef NS_CUDA_KERNELS_H
#define NS_CUDA_KERNELS_H

#include "math.h"

// The output position o whose window puts tap t on input position i
// (ns_conv_in_pos(o, t, stride, pad) == i), or -1 if there is none in [0, out).
NS_HD static inline int ns_conv_out_pos(int i, int t, int stride, int pad, int out) {
    int shifted = i + pad - t;
    if (shifted < 0 || shifted % stride != 0) return -1;
    int o = shifted / stride;
    return o < out ? o : -1;
}

// The outputs whose size-wide window covers input position i: [*lo, *hi), ascending.
NS_HD static inline void ns_window_cover(int i, int size, int stride, int pad, int out, int *lo,
                                         int *hi) {
    int first = i + pad - size + 1;  // o*stride >= i + pad - size + 1
    *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    *hi = (i + pad) / stride + 1;    // o*stride <= i + pad
    if (*hi > out) *hi = out;
    if (*lo > *hi) *lo = *hi;
}

// normalize_u8's per-channel constants travel by value in the kernel's parameters
// (they are host arrays); more channels than this go in groups, one launch each.
enum { NS_NORM_MAX_CH = 64 };
struct ns_norm_params {
    int c0, cn;  // channels [c0, c0 + cn) of this launch
    float mean[NS_NORM_MAX_CH], std[NS_NORM_MAX_CH];
};

#endif
