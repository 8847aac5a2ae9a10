// cuda_conv_im2col.cu — im2col + one cuBLAS gemm per chunk of images: the vectorized
// table's convolutions in a build without cuDNN (CUDNN=0), and in a build with it,
// what a shape falls back to when cuDNN can't run it (cuda_conv_cudnn.cu).
//
// A chunk of nb images is laid out as matrices whose columns run over
// (image, output position), P = nb*oh*ow of them:
//   col (c*r*s, P): row (ci,ky,kx) holds the input pixel under that tap, 0 in the padding
//   yp  (k, P):     the chunk's output (or dy), channel-major
//   fwd:         yp = w (k, c*r*s) . col,   then yp is scattered into y (n,k,oh,ow)
//   bwd_data:    col = w^T . yp (from dy),  then col2im adds col into dx (or writes it)
//   bwd_filter: dw += yp (from dy) . col^T
// so each pass is one large gemm per chunk, not one small gemm per image. The
// workspace holds col and yp for one chunk; nb is as many images as fit in
// cuda_set_conv_chunk_bytes (64 MiB by default), at least one.
//
// Each pass is told how many bytes its workspace holds. A shape cuDNN was to run
// was given cuDNN's workspace, often smaller; when cuDNN then fails and the shape
// falls back here in the same call, the pass borrows the context's scratch buffer
// (cu_scratch) for its chunks instead. The chunks are the same either way, so the
// results are the same bits.
#include "cuda_backend.h"
#include "cuda_common.h"
#include "km_elem.h"

static size_t chunk_bytes = (size_t)64 << 20;

extern "C" void cuda_set_conv_chunk_bytes(size_t bytes) { chunk_bytes = bytes; }

static size_t crs_of(const struct conv_geom *g) { return (size_t)g->c * g->r * g->s; }
static size_t ohow_of(const struct conv_geom *g) { return (size_t)g->oh * g->ow; }

static size_t image_floats(const struct conv_geom *g) {
    return (crs_of(g) + g->k) * ohow_of(g);
}

static int chunk_images(const struct conv_geom *g) {
    if (image_floats(g) == 0) return g->n > 0 ? g->n : 1;
    size_t fit = chunk_bytes / (image_floats(g) * sizeof(float));
    if (fit < 1) fit = 1;
    return fit < (size_t)g->n ? (int)fit : g->n;
}

size_t cu_im2col_workspace(const struct conv_geom *g) {
    return (size_t)chunk_images(g) * image_floats(g) * sizeof(float);
}

// Where a pass keeps col and yp: ws when its ws_bytes are enough, else the scratch
// buffer; false (recorded) if the device has no memory for that.
static bool chunk_space(const struct conv_geom *g, void *ws, size_t ws_bytes, float **col) {
    size_t need = cu_im2col_workspace(g);
    if (ws_bytes >= need) {
        *col = (float *)ws;
        return true;
    }
    *col = (float *)cu_scratch(need);
    return *col != NULL;
}

// x (n,c,h,w), images [b0, b0+nb) -> col (c*r*s, nb*oh*ow); a thread per col element
__global__ static void im2col_kernel(struct conv_geom g, int b0, int nb, const float *x,
                                     float *col) {
    size_t o = cu_tid();
    if (o >= (size_t)g.c * g.r * g.s * nb * g.oh * g.ow) return;
    int row, bl, oy, ox, ci, ky, kx;  // col as (c*r*s, nb, oh, ow), then its row as (c, r, s)
    km_unflatten4(o, nb, g.oh, g.ow, &row, &bl, &oy, &ox);
    km_unflatten3((size_t)row, g.r, g.s, &ci, &ky, &kx);
    col[o] = km_im2col_at(&g, x, ci, ky, kx, b0 + bl, oy, ox);
}

// col (c*r*s, nb*oh*ow) -> dx (n,c,h,w) += (= when !acc), images [b0, b0+nb): the
// adjoint of im2col; a thread per dx element gathers every col entry that copied it
__global__ static void col2im_kernel(struct conv_geom g, int b0, int nb, const float *col,
                                     float *dx, bool acc) {
    size_t o = cu_tid();
    size_t image = (size_t)g.c * g.h * g.w;
    if (o >= nb * image) return;
    int bl, ci, iy, ix;
    km_unflatten4(o, g.c, g.h, g.w, &bl, &ci, &iy, &ix);
    float v = km_col2im_at(&g, nb, col, bl, ci, iy, ix);
    dx[b0 * image + o] = acc ? dx[b0 * image + o] + v : v;
}

// dy (n,k,oh,ow), images [b0, b0+nb) -> yp (k, nb*oh*ow); a thread per dy element
__global__ static void gather_dy_kernel(struct conv_geom g, int b0, int nb, const float *dy,
                                        float *yp) {
    size_t o = cu_tid();
    size_t image = (size_t)g.k * g.oh * g.ow;
    if (o >= nb * image) return;
    int bl, ko, p;
    km_unflatten3(o, g.k, g.oh * g.ow, &bl, &ko, &p);
    yp[km_chunk_kp_index(&g, nb, bl, ko, p)] = dy[b0 * image + o];
}

// yp (k, nb*oh*ow), bias (k) or NULL -> y (n,k,oh,ow), images [b0, b0+nb); a thread per y element
__global__ static void scatter_y_kernel(struct conv_geom g, int b0, int nb, const float *yp,
                                        const float *bias, float *y) {
    size_t o = cu_tid();
    size_t image = (size_t)g.k * g.oh * g.ow;
    if (o >= nb * image) return;
    int bl, ko, p;
    km_unflatten3(o, g.k, g.oh * g.ow, &bl, &ko, &p);
    y[b0 * image + o] = yp[km_chunk_kp_index(&g, nb, bl, ko, p)] + (bias ? bias[ko] : 0.0f);
}

// x (n,c,h,w), w (k,c,r,s), bias (k) or NULL -> y (n,k,oh,ow)
void cu_im2col_fwd(const struct conv_geom *g, const float *x, const float *w, const float *bias,
                   float *y, void *ws, size_t ws_bytes) {
    int crs = (int)crs_of(g), chunk = chunk_images(g);
    size_t ohow = ohow_of(g);
    float *col;
    if (!chunk_space(g, ws, ws_bytes, &col)) return;
    float *yp = col + crs_of(g) * chunk * ohow;
    for (int b0 = 0; b0 < g->n; b0 += chunk) {
        int nb = g->n - b0 < chunk ? g->n - b0 : chunk, cols = (int)(nb * ohow);
        CU_LAUNCH_PER_ELEMENT(im2col_kernel, crs_of(g) * cols, *g, b0, nb, x, col);
        cu_gemm(false, false, g->k, cols, crs, 1.0f, w, col, 0.0f, yp);
        CU_LAUNCH_PER_ELEMENT(scatter_y_kernel, (size_t)g->k * cols, *g, b0, nb, yp, bias, y);
    }
}

// dy (n,k,oh,ow), w (k,c,r,s) -> dx (n,c,h,w) +=, or = when !acc
void cu_im2col_bwd_data(const struct conv_geom *g, const float *dy, const float *w, float *dx,
                        bool acc, void *ws, size_t ws_bytes) {
    int crs = (int)crs_of(g), chunk = chunk_images(g);
    size_t ohow = ohow_of(g);
    float *col;
    if (!chunk_space(g, ws, ws_bytes, &col)) return;
    float *yp = col + crs_of(g) * chunk * ohow;
    for (int b0 = 0; b0 < g->n; b0 += chunk) {
        int nb = g->n - b0 < chunk ? g->n - b0 : chunk, cols = (int)(nb * ohow);
        CU_LAUNCH_PER_ELEMENT(gather_dy_kernel, (size_t)g->k * cols, *g, b0, nb, dy, yp);
        cu_gemm(true, false, crs, cols, g->k, 1.0f, w, yp, 0.0f, col);
        CU_LAUNCH_PER_ELEMENT(col2im_kernel, (size_t)nb * g->c * g->h * g->w, *g, b0, nb, col, dx,
                              acc);
    }
}

// x (n,c,h,w), dy (n,k,oh,ow) -> dw (k,c,r,s) +=, dbias (k) += (if not NULL)
void cu_im2col_bwd_filter(const struct conv_geom *g, const float *x, const float *dy, float *dw,
                          float *dbias, void *ws, size_t ws_bytes) {
    int crs = (int)crs_of(g), chunk = chunk_images(g);
    size_t ohow = ohow_of(g);
    float *col;
    if (!chunk_space(g, ws, ws_bytes, &col)) return;
    float *yp = col + crs_of(g) * chunk * ohow;
    for (int b0 = 0; b0 < g->n; b0 += chunk) {
        int nb = g->n - b0 < chunk ? g->n - b0 : chunk, cols = (int)(nb * ohow);
        CU_LAUNCH_PER_ELEMENT(im2col_kernel, crs_of(g) * cols, *g, b0, nb, x, col);
        CU_LAUNCH_PER_ELEMENT(gather_dy_kernel, (size_t)g->k * cols, *g, b0, nb, dy, yp);
        cu_gemm(false, true, g->k, crs, cols, 1.0f, yp, col, 1.0f, dw);
    }
    if (dbias) cu_bias_grad(g->n, g->k, g->oh * g->ow, dy, dbias);
}

#if !NS_HAVE_CUDNN
// A build without cuDNN: the table's entries are the passes above, in the workspace
// cu_conv2d_workspace gave them.
extern "C" bool cuda_has_cudnn(void) { return false; }
extern "C" void cuda_dnn_fail_next_for_tests(enum cuda_dnn_step at, int status) {
    (void)at;
    (void)status;
}
void cu_conv_forget(void) {}

size_t cu_conv2d_workspace(const struct conv_geom *g) { return cu_im2col_workspace(g); }

void cu_conv2d_fwd(const struct conv_geom *g, const float *x, const float *w, const float *bias,
                   float *y, void *ws) {
    cu_im2col_fwd(g, x, w, bias, y, ws, cu_im2col_workspace(g));
}

void cu_conv2d_bwd_data(const struct conv_geom *g, const float *dy, const float *w, float *dx,
                        bool acc, void *ws) {
    cu_im2col_bwd_data(g, dy, w, dx, acc, ws, cu_im2col_workspace(g));
}

void cu_conv2d_bwd_filter(const struct conv_geom *g, const float *x, const float *dy, float *dw,
                          float *dbias, void *ws) {
    cu_im2col_bwd_filter(g, x, dy, dw, dbias, ws, cu_im2col_workspace(g));
}
#endif
