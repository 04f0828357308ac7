/* shape.h - a row shape as the config writes it ("3,32,32") and as
 * messages show it ("[3, 32, 32]"). */
#ifndef SERVE_TORCH_SHAPE_H
#define SERVE_TORCH_SHAPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "torch_shim.h"

static inline void shape_format(const int64_t *shape, size_t rank, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "[");
    for (size_t i = 0; i < rank && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < len) snprintf(buf + n, len - n, "]");
}

/* Parses "64" or "3,32,32": sizes over 0, at most TORCH_SHIM_MAX_RANK. */
static inline bool shape_parse(const char *text, int64_t *shape, int *rank)
{
    *rank = 0;
    const char *p = text;
    while (*p) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v <= 0 || *rank == TORCH_SHIM_MAX_RANK) return false;
        shape[(*rank)++] = v;
        p = end;
        if (*p == ',') p++;
        else if (*p) return false;
    }
    return *rank > 0;
}

#endif
