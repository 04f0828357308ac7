/* tokens - a simulated generative model, for tests and benchmarks of
 * streaming without weights. A request asks for `n` tokens (query, default
 * 16); its answer is text/event-stream, one event per token:
 *
 *     data: {"index": 0, "token": "t0"}
 *
 * and a last `event: done`. The cost model is a decoder's: admitting a
 * batch of new requests costs prefill_us once (their first token comes out
 * of it), and every further step costs step_us + step_per_item_us for each
 * open stream, producing one token for each.
 *
 * With continuous batching (the default) each handle_batch admits what
 * arrived, runs one step and asks for another (serve_replica_continue)
 * while streams are open, so a new request waits a step or a few, not a
 * whole generation. Since a prefill pass costs the same for one request as
 * for many, requests that arrive while streams are open wait (deferred)
 * until they are at least half as many as the open streams, or until the
 * oldest has waited admit_wait_us (default 2000: one prefill): the prefill is shared,
 * and a loaded replica does not pay a prefill at every step. `continuous=false` is request-level batching: a batch is
 * generated to its end inside one handle_batch, as a server without
 * step-level batching does; it is here to be compared against.
 *
 * A stream whose client has gone stops at the next step (the cancel
 * callback only counts the news; the step loop sees it through
 * serve_request_cancelled). A write refused because the client reads
 * slowly keeps its token for the next step. GET ?stats=1 answers the
 * replica's counts as JSON. */
#include <serve/plugin.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

struct gen {
    serve_request *req;
    long next;   /* the index of the next token */
    long count;  /* tokens asked for */
};

struct tokens {
    serve_replica *replica;
    long prefill_us, step_us, step_per_item_us;
    int continuous;
    long admit_wait_us;
    struct gen *open;
    size_t open_count, open_cap;
    serve_request **waiting;      /* deferred, not admitted yet */
    size_t waiting_count, waiting_cap;
    struct timespec oldest_wait;  /* when the first of them arrived */
    atomic_ulong admitted, finished, cancelled_seen, cancel_callbacks, tokens, slow_writes;
    size_t max_open; /* the most streams open at once */
    /* The prefill passes as they really took (sleeping overshoots), for
     * benchmarks that subtract the model's own time. */
    atomic_ulong prefill_passes, prefill_ns;
};

static int read_us(serve_replica *replica, const serve_config *config, const char *key, long def,
                   long *out)
{
    int64_t us;
    if (serve_config_int(config, key, def, &us) != SERVE_OK) return -1;
    if (us < 0 || us > 60000000) {
        serve_replica_fail(replica, "config %s=%lld: expected microseconds, 0..60000000", key,
                           (long long)us);
        return -1;
    }
    *out = (long)us;
    return 0;
}

static int tokens_init(serve_replica *replica, const serve_config *config, void **state)
{
    struct tokens *t = calloc(1, sizeof *t);
    if (!t) {
        serve_replica_fail(replica, "out of memory");
        return -1;
    }
    t->replica = replica;
    if (read_us(replica, config, "prefill_us", 2000, &t->prefill_us) != 0 ||
        read_us(replica, config, "step_us", 1000, &t->step_us) != 0 ||
        read_us(replica, config, "step_per_item_us", 20, &t->step_per_item_us) != 0 ||
        read_us(replica, config, "admit_wait_us", 2000, &t->admit_wait_us) != 0 ||
        serve_config_bool(config, "continuous", 1, &t->continuous) != SERVE_OK) {
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

static _Thread_local int precise_sleep;

static void sleep_us(long us)
{
    if (us <= 0) return;
    if (!precise_sleep) {
        prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
        precise_sleep = 1;
    }
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void answer_stats(struct tokens *t, serve_request *req)
{
    char body[512];
    int n = snprintf(body, sizeof body,
                     "{\"admitted\": %lu, \"finished\": %lu, \"cancelled_seen\": %lu, "
                     "\"cancel_callbacks\": %lu, \"tokens\": %lu, \"slow_writes\": %lu, "
                     "\"open\": %zu, \"max_open\": %zu, \"prefill_mean_us\": %.1f}",
                     atomic_load(&t->admitted), atomic_load(&t->finished),
                     atomic_load(&t->cancelled_seen), atomic_load(&t->cancel_callbacks),
                     atomic_load(&t->tokens), atomic_load(&t->slow_writes), t->open_count,
                     t->max_open,
                     atomic_load(&t->prefill_passes)
                         ? atomic_load(&t->prefill_ns) / 1e3 / atomic_load(&t->prefill_passes)
                         : 0.0);
    serve_respond(req, 200, "application/json", body, (size_t)n);
}

/* Admits a new request: its stream begins. */
static void admit(struct tokens *t, serve_request *req)
{
    const char *n = serve_request_query(req, "n");
    long count = n ? strtol(n, NULL, 10) : 16;
    if (count < 1 || count > 1000000) {
        serve_respond_error(req, 400, "n: expected 1..1000000 tokens");
        return;
    }
    if (t->open_count == t->open_cap) {
        size_t cap = t->open_cap ? t->open_cap * 2 : 64;
        struct gen *grown = realloc(t->open, cap * sizeof *grown);
        if (!grown) {
            serve_respond_error(req, 503, "out of memory");
            return;
        }
        t->open = grown;
        t->open_cap = cap;
    }
    if (serve_stream_begin(req, 200, "text/event-stream") != SERVE_OK) return; /* gone already */
    atomic_fetch_add(&t->admitted, 1);
    t->open[t->open_count++] = (struct gen){.req = req, .next = 0, .count = count};
    if (t->open_count > t->max_open) t->max_open = t->open_count;
}

/* One token for every open stream; ended streams leave the list. */
static void step(struct tokens *t)
{
    size_t kept = 0;
    for (size_t i = 0; i < t->open_count; i++) {
        struct gen *g = &t->open[i];
        if (serve_request_cancelled(g->req)) {
            atomic_fetch_add(&t->cancelled_seen, 1);
            serve_stream_end(g->req); /* nothing is sent; the request is finished */
            continue;
        }
        char data[96];
        snprintf(data, sizeof data, "{\"index\": %ld, \"token\": \"t%ld\"}", g->next, g->next);
        int rc = serve_stream_event(g->req, NULL, data);
        if (rc == SERVE_OK) {
            g->next++;
            atomic_fetch_add(&t->tokens, 1);
        } else if (rc == SERVE_EAGAIN) {
            atomic_fetch_add(&t->slow_writes, 1); /* kept for the next step */
        }
        if (g->next == g->count && rc == SERVE_OK) {
            serve_stream_event(g->req, "done", "[DONE]");
            serve_stream_end(g->req);
            atomic_fetch_add(&t->finished, 1);
            continue;
        }
        if (rc == SERVE_ETIMEDOUT) {
            atomic_fetch_add(&t->cancelled_seen, 1);
            serve_stream_end(g->req);
            continue;
        }
        t->open[kept++] = *g;
    }
    t->open_count = kept;
}

static long us_since(const struct timespec *then)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - then->tv_sec) * 1000000L + (now.tv_nsec - then->tv_nsec) / 1000;
}

/* A request that arrived while streams are open: it waits for the next
 * shared prefill. False when it cannot wait (it is then admitted now). */
static int hold(struct tokens *t, serve_request *req)
{
    if (t->waiting_count == t->waiting_cap) {
        size_t cap = t->waiting_cap ? 2 * t->waiting_cap : 64;
        serve_request **grown = realloc(t->waiting, cap * sizeof *grown);
        if (!grown) return 0;
        t->waiting = grown;
        t->waiting_cap = cap;
    }
    if (serve_request_defer(req) != SERVE_OK) return 0;
    if (t->waiting_count == 0) clock_gettime(CLOCK_MONOTONIC, &t->oldest_wait);
    t->waiting[t->waiting_count++] = req;
    return 1;
}

static int tokens_batch(void *state, serve_request *const *reqs, size_t n)
{
    struct tokens *t = state;
    size_t admitted = 0;
    for (size_t i = 0; i < n; i++) {
        if (serve_request_query(reqs[i], "stats")) {
            answer_stats(t, reqs[i]);
            continue;
        }
        if (t->continuous && t->open_count && hold(t, reqs[i])) continue;
        size_t before = t->open_count;
        admit(t, reqs[i]);
        admitted += t->open_count - before;
    }
    size_t half = t->open_count / 2 ? t->open_count / 2 : 1;
    if (t->waiting_count && (admitted || t->open_count == 0 || t->waiting_count >= half ||
                             us_since(&t->oldest_wait) >= t->admit_wait_us)) {
        for (size_t i = 0; i < t->waiting_count; i++) {
            size_t before = t->open_count;
            admit(t, t->waiting[i]); /* a cancelled one is finished by its begin */
            admitted += t->open_count - before;
        }
        t->waiting_count = 0;
    }
    /* One pass: the prefill of the new requests (batched; it gives their
     * first token) and a decode step of the streams open before them. */
    size_t stepping = t->open_count - admitted;
    long cost = (admitted ? t->prefill_us : 0) +
                (stepping ? t->step_us + t->step_per_item_us * (long)stepping : 0);
    if (t->open_count) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        sleep_us(cost);
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (admitted && !stepping) { /* a pass that is all prefill */
            atomic_fetch_add(&t->prefill_passes, 1);
            atomic_fetch_add(&t->prefill_ns, (unsigned long)((b.tv_sec - a.tv_sec) * 1000000000L +
                                                             (b.tv_nsec - a.tv_nsec)));
        }
        step(t);
    }
    if (!t->continuous) {
        /* Request-level batching: this batch runs to its end here. */
        while (t->open_count) {
            sleep_us(t->step_us + t->step_per_item_us * (long)t->open_count);
            step(t);
        }
    } else if (t->open_count || t->waiting_count) {
        serve_replica_continue(t->replica);
    }
    return 0;
}

static void tokens_cancel(void *state, serve_request *req)
{
    (void)req;
    struct tokens *t = state;
    atomic_fetch_add(&t->cancel_callbacks, 1);
}

static void tokens_destroy(void *state)
{
    struct tokens *t = state;
    free(t->open);
    free(t->waiting);
    free(t);
}

static const serve_plugin tokens = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "tokens",
    .init = tokens_init,
    .handle_batch = tokens_batch,
    .destroy = tokens_destroy,
    .cancel = tokens_cancel,
};

SERVE_PLUGIN_DEFINE(tokens)
