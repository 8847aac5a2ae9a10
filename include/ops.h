/* ops.h — differentiable operations on tensors.
 *
 * Each op checks shapes (errors name the op, the shapes, and what was expected),
 * allocates its output from the step arena, calls the backend table, and records
 * itself on the tape when gradients are needed. Ops return NULL on error.
 * Shapes: NCHW for images; (n,k) for logits; labels are int32 (n) on the device. */
#ifndef NS_OPS_H
#define NS_OPS_H

#include <stdint.h>

#include "autograd.h"

/* x (n,c,h,w), w (k,c,r,s), bias (k) or NULL -> (n,k,oh,ow) */
struct tensor *op_conv2d(struct ag_ctx *c, struct tensor *x, struct tensor *w,
                         struct tensor *bias, int stride, int pad);
/* x (n,in), w (out,in), bias (out) or NULL -> (n,out) */
struct tensor *op_linear(struct ag_ctx *c, struct tensor *x, struct tensor *w, struct tensor *bias);
/* x (n,c,h,w); gamma, beta, running_mean, running_var (c). Batch statistics when
 * c->training (and running stats updated with `momentum`), running stats otherwise. */
struct tensor *op_batchnorm2d(struct ag_ctx *c, struct tensor *x, struct tensor *gamma,
                              struct tensor *beta, struct tensor *running_mean,
                              struct tensor *running_var, float momentum, float eps);
/* relu(batchnorm2d(x) + res), res (same shape as x) or NULL for relu(batchnorm2d(x)):
 * one op, and one pass over memory, for a ResNet block's BN -> ReLU and its end.
 * Same statistics, running updates and gradients as the separate ops, which it is
 * made of in evaluation and on a backend table without bn_relu_fwd_train. */
struct tensor *op_batchnorm2d_relu(struct ag_ctx *c, struct tensor *x, struct tensor *res,
                                   struct tensor *gamma, struct tensor *beta,
                                   struct tensor *running_mean, struct tensor *running_var,
                                   float momentum, float eps);
struct tensor *op_relu(struct ag_ctx *c, struct tensor *x);
/* a, b same shape -> a + b */
struct tensor *op_add(struct ag_ctx *c, struct tensor *a, struct tensor *b);
/* x (n,c,h,w) -> (n,c,oh,ow); oh = (h + 2*pad - size)/stride + 1 */
struct tensor *op_maxpool2d(struct ag_ctx *c, struct tensor *x, int size, int stride, int pad);
struct tensor *op_avgpool2d(struct ag_ctx *c, struct tensor *x, int size, int stride, int pad);
/* x (n,c,h,w) -> (n,c) */
struct tensor *op_global_avgpool(struct ag_ctx *c, struct tensor *x);
/* x (n,...) -> (n, rest) */
struct tensor *op_flatten(struct ag_ctx *c, struct tensor *x);
/* logits (n,k), labels (n) int32 on the device -> scalar mean cross-entropy */
struct tensor *op_softmax_xent(struct ag_ctx *c, struct tensor *logits, const int32_t *labels);
/* Number of rows of logits whose argmax equals the label; -1 on error. No gradient. */
int op_accuracy_count(struct ag_ctx *c, struct tensor *logits, const int32_t *labels);
/* src uint8 (n,h,w,ch) on the device -> float (n,ch,h,w), (src/255 - mean)/std per channel.
 * mean/std are host arrays of ch floats. No gradient (it is the input). */
struct tensor *op_normalize_u8(struct ag_ctx *c, const uint8_t *src, int n, int h, int w, int ch,
                               const float *mean, const float *std);

#endif
