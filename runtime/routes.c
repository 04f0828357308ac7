/* routes.c - endpoint snapshots, traffic splits; matching and finding go
 * through the snapshot's index (route_index.c). */
#include "routes.h"

#include "metrics.h"
#include "route_index.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static int by_route_length(const void *a, const void *b)
{
    const struct route_entry *x = a, *y = b;
    if (!x->route != !y->route) return x->route ? -1 : 1;
    if (x->route_len != y->route_len) return x->route_len > y->route_len ? -1 : 1;
    return 0;
}

static struct route_target *targets_build(const struct share *shares, size_t n, bool cumulative,
                                          struct backend *(*lookup)(void *, const char *),
                                          void *ctx)
{
    struct route_target *t = calloc(n + 1, sizeof *t);
    double sum = 0;
    for (size_t i = 0; t && i < n; i++) {
        t[i].backend = lookup(ctx, shares[i].backend);
        backend_ref(t[i].backend);
        sum += shares[i].weight;
        t[i].weight = cumulative ? sum : shares[i].weight;
    }
    /* Rounding must never leave a draw just below 1 without a target. */
    if (t && cumulative && n) t[n - 1].weight = 2.0;
    return t;
}

struct routes *routes_build(const struct endpoint_spec *endpoints, size_t count,
                            struct backend *(*lookup)(void *ctx, const char *name),
                            void *ctx)
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
        const struct endpoint_spec *spec = &endpoints[i];
        struct route_entry *e = &r->entries[r->count++];
        e->endpoint = strdup(spec->name);
        e->metrics = metrics_endpoint(spec->name);
        e->route = spec->route ? strdup(spec->route) : NULL;
        e->route_len = e->route ? strlen(e->route) : 0;
        e->methods = spec->methods;
        e->targets = targets_build(spec->traffic, spec->traffic_count, true, lookup, ctx);
        e->target_count = e->targets ? spec->traffic_count : 0;
        e->shadows = targets_build(spec->shadows, spec->shadow_count, false, lookup, ctx);
        e->shadow_count = e->shadows ? spec->shadow_count : 0;
        if (!e->endpoint || (spec->route && !e->route) || !e->targets || !e->shadows) {
            routes_release(r);
            return NULL;
        }
    }
    qsort(r->entries, r->count, sizeof *r->entries, by_route_length);
    /* After the sort: the index points at the entries where they now lie,
     * and where two share a route or a name (deployments refuse both), the
     * first in this order wins. */
    r->index = route_index_build(r->entries, r->count);
    if (!r->index) {
        routes_release(r);
        return NULL;
    }
    return r;
}

void routes_ref(struct routes *r)
{
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
}

void routes_release(struct routes *r)
{
    if (!r || atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1) return;
    route_index_free(r->index); /* it points into the entries */
    for (size_t i = 0; i < r->count; i++) {
        struct route_entry *e = &r->entries[i];
        free(e->endpoint);
        free(e->route);
        for (size_t t = 0; t < e->target_count; t++) backend_release(e->targets[t].backend);
        for (size_t t = 0; t < e->shadow_count; t++) backend_release(e->shadows[t].backend);
        free(e->targets);
        free(e->shadows);
    }
    free(r->entries);
    free(r);
}

const struct route_entry *routes_match(const struct routes *r, const char *path)
{
    return r ? route_index_match(r->index, path) : NULL;
}

const struct route_entry *routes_find(const struct routes *r, const char *name)
{
    return r ? route_index_find(r->index, name) : NULL;
}

/* xorshift64*, one state per thread, seeded from the kernel. */
static _Thread_local uint64_t random_state;

double route_random(void)
{
    if (!random_state) {
        if (getrandom(&random_state, sizeof random_state, 0) != sizeof random_state ||
            !random_state)
            random_state = (uint64_t)(uintptr_t)&random_state | 1;
    }
    random_state ^= random_state >> 12;
    random_state ^= random_state << 25;
    random_state ^= random_state >> 27;
    return (double)((random_state * 0x2545F4914F6CDD1DULL) >> 11) * 0x1.0p-53;
}

/* FNV-1a, then a finalizer so that similar keys spread over [0, 1). */
static double key_draw(const char *key)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (double)(h >> 11) * 0x1.0p-53;
}

struct backend *route_pick(const struct route_entry *e, const char *shard_key)
{
    if (e->target_count == 1) return e->targets[0].backend;
    double u = shard_key ? key_draw(shard_key) : route_random();
    for (size_t i = 0; i < e->target_count; i++)
        if (u < e->targets[i].weight) return e->targets[i].backend;
    return e->targets[e->target_count - 1].backend;
}
