/* schema.h — the config's key table, inside src/config/ only: what a row says about
 * one key (config.c reads files and --set through it; schema.c holds the rows). */
#ifndef NS_CONFIG_SCHEMA_H
#define NS_CONFIG_SCHEMA_H

#include <stddef.h>

#include "config.h"

enum key_type { T_INT, T_FLOAT, T_BOOL, T_ENUM, T_STRING, T_INT_LIST, T_FLOAT_LIST };

/* flags of a row */
#define SHAPE    1u  /* decides parameter shapes: part of cfg_fingerprint */
#define MIN_OPEN 2u  /* value must be > min, not >= min */
#define MAX_OPEN 4u  /* value must be < max, not <= max */

struct key_spec {
    const char *section;
    const char *name;
    enum key_type type;
    const char *def;          /* default, as file text: parsed by the same code as a file */
    double min, max;          /* int, float, and each list entry */
    int min_n, max_n;         /* number of list entries */
    unsigned flags;
    const char *const *names; /* enum: allowed values indexed by the C enum, NULL-terminated */
    const char *help;
    size_t offset;            /* of the field in struct config */
};

/* Every key, grouped by section in the order a printed config shows them. */
enum { CFG_N_KEYS = 54 };
extern const struct key_spec cfg_keys[CFG_N_KEYS];

#endif
