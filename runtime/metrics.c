/* metrics.c - histograms and endpoint counters (see metrics.h). */
#include "metrics.h"

#include <event2/buffer.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint64_t seconds_bounds[] = {
    50000,     100000,    250000,     500000,     1000000,    2500000,     5000000,
    10000000,  25000000,  50000000,   100000000,  250000000,  500000000,   1000000000,
    2500000000, 5000000000, 10000000000, 30000000000, 60000000000};
static const uint64_t batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

void histogram_init_seconds(struct histogram *h)
{
    memset(h, 0, sizeof *h);
    h->bounds = seconds_bounds;
    h->bound_count = sizeof seconds_bounds / sizeof *seconds_bounds;
    h->scale = 1e-9;
}

void histogram_init_batch_sizes(struct histogram *h)
{
    memset(h, 0, sizeof *h);
    h->bounds = batch_bounds;
    h->bound_count = sizeof batch_bounds / sizeof *batch_bounds;
    h->scale = 1;
}

bool metrics_enabled = true;

void histogram_observe(struct histogram *h, uint64_t value)
{
    if (!metrics_enabled) return;
    size_t i = 0;
    while (i < h->bound_count && value > h->bounds[i]) i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, value, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

void histogram_write(const struct histogram *h, struct evbuffer *out, const char *name,
                     const char *labels)
{
    unsigned long cumulative = 0;
    const char *comma = *labels ? "," : "";
    for (size_t i = 0; i <= h->bound_count; i++) {
        cumulative += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        if (i < h->bound_count)
            evbuffer_add_printf(out, "%s_bucket{%s%sle=\"%g\"} %lu\n", name, labels, comma,
                                (double)h->bounds[i] * h->scale, cumulative);
        else
            evbuffer_add_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %lu\n", name, labels, comma,
                                cumulative);
    }
    evbuffer_add_printf(out, "%s_sum{%s} %.9g\n", name, labels,
                        (double)atomic_load(&h->sum) * h->scale);
    evbuffer_add_printf(out, "%s_count{%s} %lu\n", name, labels, atomic_load(&h->count));
}

static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct endpoint_metrics *registry;

struct endpoint_metrics *metrics_endpoint(const char *name)
{
    pthread_mutex_lock(&registry_mutex);
    struct endpoint_metrics *m = registry;
    while (m && strcmp(m->name, name) != 0) m = m->next;
    if (!m) {
        size_t n = strlen(name) + 1;
        m = calloc(1, sizeof *m + n);
        if (m) {
            memcpy(m->name, name, n);
            histogram_init_seconds(&m->request_seconds);
            histogram_init_seconds(&m->first_byte_seconds);
            m->next = registry;
            registry = m;
        }
    }
    pthread_mutex_unlock(&registry_mutex);
    return m;
}

void metrics_count_response(struct endpoint_metrics *m, int status, uint64_t elapsed_ns)
{
    if (!m || status < 100 || status > 599 || !metrics_enabled) return;
    atomic_fetch_add_explicit(&m->by_status[status - 100], 1, memory_order_relaxed);
    histogram_observe(&m->request_seconds, elapsed_ns);
}

void metrics_count_stream(struct endpoint_metrics *m, uint64_t bytes, uint64_t first_ns,
                          uint64_t received_ns)
{
    if (!m || !metrics_enabled) return;
    atomic_fetch_add_explicit(&m->streams, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->streamed_bytes, bytes, memory_order_relaxed);
    if (first_ns) histogram_observe(&m->first_byte_seconds, first_ns - received_ns);
}

static struct backend_metrics *backends; /* guarded by registry_mutex */

struct backend_metrics *metrics_backend(const char *name)
{
    pthread_mutex_lock(&registry_mutex);
    struct backend_metrics *m = backends;
    while (m && strcmp(m->name, name) != 0) m = m->next;
    if (!m && (m = calloc(1, sizeof *m + strlen(name) + 1))) {
        strcpy(m->name, name);
        histogram_init_batch_sizes(&m->batch_size);
        histogram_init_seconds(&m->queue_seconds);
        histogram_init_seconds(&m->remote_seconds);
        histogram_init_seconds(&m->exec_seconds);
        histogram_init_seconds(&m->batch_wait_seconds);
        m->next = backends;
        backends = m;
    }
    pthread_mutex_unlock(&registry_mutex);
    return m;
}

atomic_ulong *metrics_handle_calls(struct backend_metrics *m, const char *target)
{
    pthread_mutex_lock(&registry_mutex);
    struct handle_calls *c = atomic_load(&m->calls);
    while (c && strcmp(c->target, target) != 0) c = c->next;
    if (!c && (c = calloc(1, sizeof *c + strlen(target) + 1))) {
        strcpy(c->target, target);
        c->next = atomic_load(&m->calls);
        atomic_store(&m->calls, c); /* readers walk the list without the mutex */
    }
    pthread_mutex_unlock(&registry_mutex);
    return c ? &c->count : NULL;
}

size_t metrics_endpoint_count(void)
{
    size_t n = 0;
    pthread_mutex_lock(&registry_mutex);
    for (struct endpoint_metrics *m = registry; m; m = m->next) n++;
    pthread_mutex_unlock(&registry_mutex);
    return n;
}

void metrics_each_endpoint(void (*fn)(const struct endpoint_metrics *m, void *arg), void *arg,
                           size_t max)
{
    pthread_mutex_lock(&registry_mutex);
    for (struct endpoint_metrics *m = registry; m && max; m = m->next, max--) fn(m, arg);
    pthread_mutex_unlock(&registry_mutex);
}

/* Under registry_mutex: one histogram series per endpoint, the struct
 * member at `member`. */
static void write_endpoint_histograms(struct evbuffer *out, const char *name, const char *help,
                                      size_t member)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (struct endpoint_metrics *m = registry; m; m = m->next) {
        char labels[160];
        snprintf(labels, sizeof labels, "endpoint=\"%s\"", m->name);
        histogram_write((struct histogram *)((char *)m + member), out, name, labels);
    }
}

/* Under registry_mutex: one counter per endpoint, the atomic_ulong at `member`. */
static void write_endpoint_counters(struct evbuffer *out, const char *name, const char *help,
                                    size_t member)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (struct endpoint_metrics *m = registry; m; m = m->next)
        evbuffer_add_printf(out, "%s{endpoint=\"%s\"} %lu\n", name, m->name,
                            atomic_load((atomic_ulong *)((char *)m + member)));
}

void metrics_write_endpoints(struct evbuffer *out)
{
    pthread_mutex_lock(&registry_mutex);
    evbuffer_add_printf(out, "# HELP serve_http_requests_total HTTP requests answered, by endpoint and status code.\n"
                             "# TYPE serve_http_requests_total counter\n");
    for (struct endpoint_metrics *m = registry; m; m = m->next)
        for (int code = 0; code < 500; code++) {
            unsigned long n = atomic_load_explicit(&m->by_status[code], memory_order_relaxed);
            if (n)
                evbuffer_add_printf(out, "serve_http_requests_total{endpoint=\"%s\",code=\"%d\"} %lu\n",
                                    m->name, code + 100, n);
        }
    write_endpoint_histograms(out, "serve_http_request_seconds",
                              "Time from request received to answer sent.",
                              offsetof(struct endpoint_metrics, request_seconds));
    write_endpoint_histograms(out, "serve_http_first_byte_seconds",
                              "Streamed answers: time from request received to the plugin's "
                              "first piece.",
                              offsetof(struct endpoint_metrics, first_byte_seconds));
    write_endpoint_counters(out, "serve_http_streamed_bytes_total", "Bytes of streamed answers.",
                            offsetof(struct endpoint_metrics, streamed_bytes));
    write_endpoint_counters(out, "serve_http_streams_total", "Streamed answers ended.",
                            offsetof(struct endpoint_metrics, streams));
    pthread_mutex_unlock(&registry_mutex);
}

void metrics_shutdown(void)
{
    pthread_mutex_lock(&registry_mutex);
    while (backends) {
        struct backend_metrics *next = backends->next;
        for (struct handle_calls *c = atomic_load(&backends->calls), *n; c; c = n) {
            n = c->next;
            free(c);
        }
        free(backends);
        backends = next;
    }
    while (registry) {
        struct endpoint_metrics *next = registry->next;
        free(registry);
        registry = next;
    }
    pthread_mutex_unlock(&registry_mutex);
}
