/* live_stats.c - the 10-second window behind `serve status` (see
 * live_stats.h). Control thread only. */
#include "live_stats.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "metrics.h"
#include "mp.h"
#include "server_internal.h"

#define SLOTS 11

struct backend_sample {
    char name[80];
    uint64_t requests, batches, batch_sum;
};

struct endpoint_sample {
    char name[80];
    uint64_t count;
    uint64_t buckets[HISTOGRAM_MAX_BUCKETS + 1];
    const uint64_t *bounds;
    size_t bound_count;
};

struct sample {
    uint64_t at_ns;
    size_t backend_count, endpoint_count;
    struct backend_sample *backends;
    struct endpoint_sample *endpoints;
};

static struct sample ring[SLOTS];
static size_t newest, filled;

static void clear(struct sample *s)
{
    free(s->backends);
    free(s->endpoints);
    memset(s, 0, sizeof *s);
}

static void take_endpoint(const struct endpoint_metrics *m, void *arg)
{
    struct sample *s = arg;
    struct endpoint_sample *e = &s->endpoints[s->endpoint_count];
    snprintf(e->name, sizeof e->name, "%s", m->name);
    for (int code = 0; code < 500; code++) e->count += atomic_load_explicit(&m->by_status[code], memory_order_relaxed);
    e->bounds = m->request_seconds.bounds;
    e->bound_count = m->request_seconds.bound_count;
    for (size_t i = 0; i <= e->bound_count; i++)
        e->buckets[i] = atomic_load_explicit(&m->request_seconds.buckets[i], memory_order_relaxed);
    s->endpoint_count++;
}

void live_stats_sample(struct server *srv)
{
    newest = (newest + 1) % SLOTS;
    struct sample *s = &ring[newest];
    clear(s);
    s->at_ns = serve__now_ns();
    size_t endpoints = metrics_endpoint_count();
    s->backends = calloc(srv->declared.backend_count + 1, sizeof *s->backends);
    s->endpoints = calloc(endpoints + 1, sizeof *s->endpoints);
    if (!s->backends || !s->endpoints) {
        clear(s);
        return;
    }
    for (size_t i = 0; i < srv->declared.backend_count; i++) {
        struct backend_sample *b = &s->backends[s->backend_count++];
        snprintf(b->name, sizeof b->name, "%s", srv->declared.backends[i].name);
        backend_totals(srv->live[i], &b->requests, &b->batches, &b->batch_sum);
    }
    metrics_each_endpoint(take_endpoint, s, endpoints);
    /* The metrics keep every endpoint ever served (counters must not go
     * back) and "" for unrouted answers; live figures show today's only. */
    size_t kept = 0;
    for (size_t i = 0; i < s->endpoint_count; i++)
        if (deployment_find_endpoint(&srv->declared, s->endpoints[i].name) >= 0)
            s->endpoints[kept++] = s->endpoints[i];
    s->endpoint_count = kept;
    if (filled < SLOTS) filled++;
}

static const struct sample *oldest(void)
{
    return filled < 2 ? NULL : &ring[(newest + SLOTS - (filled - 1)) % SLOTS];
}

/* The upper bound of the bucket holding quantile q of the differences. */
static double quantile_ms(const struct endpoint_sample *now, const struct endpoint_sample *then,
                          double q)
{
    uint64_t total = 0;
    for (size_t i = 0; i <= now->bound_count; i++) total += now->buckets[i] - then->buckets[i];
    if (!total) return 0;
    uint64_t seen = 0;
    for (size_t i = 0; i <= now->bound_count; i++) {
        seen += now->buckets[i] - then->buckets[i];
        if ((double)seen >= q * (double)total)
            return i < now->bound_count ? (double)now->bounds[i] / 1e6 : -1;
    }
    return -1;
}

void live_stats_pack(msgpack_packer *pk)
{
    const struct sample *now = &ring[newest], *then = oldest();
    double window = then ? (double)(now->at_ns - then->at_ns) / 1e9 : 0;
    msgpack_pack_map(pk, 3);
    mp_pack_key(pk, "window_s");
    msgpack_pack_double(pk, window);
    mp_pack_key(pk, "backends");
    msgpack_pack_map(pk, then ? now->backend_count : 0);
    for (size_t i = 0; then && i < now->backend_count; i++) {
        const struct backend_sample *b = &now->backends[i], *o = NULL;
        for (size_t j = 0; j < then->backend_count && !o; j++)
            if (strcmp(then->backends[j].name, b->name) == 0) o = &then->backends[j];
        uint64_t req = o && b->requests >= o->requests ? b->requests - o->requests : b->requests;
        uint64_t batches = o && b->batches >= o->batches ? b->batches - o->batches : b->batches;
        uint64_t sum = o && b->batch_sum >= o->batch_sum ? b->batch_sum - o->batch_sum : b->batch_sum;
        mp_pack_str(pk, b->name);
        msgpack_pack_map(pk, 2);
        mp_pack_key(pk, "rps");
        msgpack_pack_double(pk, window > 0 ? (double)req / window : 0);
        mp_pack_key(pk, "mean_batch_size");
        msgpack_pack_double(pk, batches ? (double)sum / (double)batches : 0);
    }
    mp_pack_key(pk, "endpoints");
    msgpack_pack_map(pk, then ? now->endpoint_count : 0);
    for (size_t i = 0; then && i < now->endpoint_count; i++) {
        const struct endpoint_sample *e = &now->endpoints[i];
        struct endpoint_sample zero = {.bounds = e->bounds, .bound_count = e->bound_count};
        const struct endpoint_sample *o = &zero;
        for (size_t j = 0; j < then->endpoint_count; j++)
            if (strcmp(then->endpoints[j].name, e->name) == 0) o = &then->endpoints[j];
        mp_pack_str(pk, e->name);
        msgpack_pack_map(pk, 3);
        mp_pack_key(pk, "rps");
        msgpack_pack_double(pk, window > 0 ? (double)(e->count - o->count) / window : 0);
        mp_pack_key(pk, "p50_ms_at_most");
        msgpack_pack_double(pk, quantile_ms(e, o, 0.5));
        mp_pack_key(pk, "p99_ms_at_most");
        msgpack_pack_double(pk, quantile_ms(e, o, 0.99));
    }
}

void live_stats_free(void)
{
    for (size_t i = 0; i < SLOTS; i++) clear(&ring[i]);
    filled = 0;
}
