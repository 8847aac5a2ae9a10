/* resnet.c — stem conv3x3 -> BN -> ReLU, stages of BasicBlocks, GAP, Linear.
 * With widths 16,32,64 and blocks 1,1,1 this is resnet_small (docs/design.md). */
#include "error.h"
#include "models.h"

int model_resnet(struct nn_model *m, const struct cfg_int_list *widths, const struct cfg_int_list *blocks,
                 int classes) {
    if (widths->n < 1 || widths->n != blocks->n)
        return err_set("[model] resnet: widths has %d entries and blocks %d; give one of each per stage",
                       widths->n, blocks->n);
    if (nn_add_conv(m, m->in_c, widths->v[0], 3, 1, 1, false) || nn_add_bn(m, widths->v[0]) || nn_add_relu(m))
        return -1;
    int c = widths->v[0];
    for (int s = 0; s < widths->n; s++)
        for (int b = 0; b < blocks->v[s]; b++) {
            int stride = s > 0 && b == 0 ? 2 : 1;  /* each later stage halves the resolution once */
            if (nn_add_block(m, c, widths->v[s], stride)) return -1;
            c = widths->v[s];
        }
    return nn_add_gap(m) || nn_add_linear(m, c, classes) ? -1 : 0;
}
