/* routes.c - endpoint snapshots and longest-prefix matching. */
#include "routes.h"

#include <stdlib.h>
#include <string.h>

static int by_route_length(const void *a, const void *b)
{
    const struct route_entry *x = a, *y = b;
    if (!x->route != !y->route) return x->route ? -1 : 1;
    if (x->route_len != y->route_len) return x->route_len > y->route_len ? -1 : 1;
    return 0;
}

struct routes *routes_build(const struct endpoint_spec *endpoints,
                            struct backend *const *backends, size_t count)
{
    struct routes *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    atomic_init(&r->refs, 1);
    r->entries = calloc(count ? count : 1, sizeof *r->entries);
    if (!r->entries) {
        free(r);
        return NULL;
    }
    for (size_t i = 0; i < count; i++) {
        struct route_entry *e = &r->entries[i];
        e->endpoint = strdup(endpoints[i].name);
        e->route = endpoints[i].route ? strdup(endpoints[i].route) : NULL;
        e->route_len = e->route ? strlen(e->route) : 0;
        e->methods = endpoints[i].methods;
        e->backend = backends[i];
        backend_ref(e->backend);
        r->count++;
    }
    qsort(r->entries, r->count, sizeof *r->entries, by_route_length);
    return r;
}

void routes_ref(struct routes *r)
{
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
}

void routes_release(struct routes *r)
{
    if (!r || atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1) return;
    for (size_t i = 0; i < r->count; i++) {
        free(r->entries[i].endpoint);
        free(r->entries[i].route);
        backend_release(r->entries[i].backend);
    }
    free(r->entries);
    free(r);
}

const struct route_entry *routes_match(const struct routes *r, const char *path)
{
    if (!r) return NULL;
    for (size_t i = 0; i < r->count; i++) {
        const struct route_entry *e = &r->entries[i];
        if (!e->route) break; /* handle-only endpoints are sorted last */
        if (strncmp(path, e->route, e->route_len) != 0) continue;
        char next = path[e->route_len];
        if (next == '\0' || next == '/' || e->route[e->route_len - 1] == '/') return e;
    }
    return NULL;
}
