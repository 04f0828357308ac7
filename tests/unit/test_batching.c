/* test_batching.c - the backend's rules (runtime/backend.c) against a fake
 * replica kind: pure code, no plugin, no server.
 *
 * The fake kind records each batch it is given (replica, requests in
 * order, when) and answers each request at once (the plugin's synchronous
 * answer) or defers it for the test thread to answer later, as a deferred
 * plugin or a process replica would. The rule under test: a replica
 * dispatches as soon as max_batch_size requests wait, or batch_wait after
 * the first, whichever comes first; never more than max_batch_size; in
 * arrival order; at most max_concurrent_queries in flight per replica.
 * Then backpressure and stop with work queued.
 *
 * Timing margins are wide (the tests run under ASan and TSan): a wait that
 * must not have happened is checked against a batch_wait of seconds, one
 * that must have happened with no upper bound tighter than seconds. */
#include <event2/buffer.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backend.h"
#include "clock.h"
#include "replica_kind.h"
#include "request.h"
#include "spec.h"
#include "unit.h"

#define TB_MAX_REQUESTS 32
#define TB_MAX_BATCHES 32
#define TB_MAX_REPLICAS 4

struct tb_batch {
    int replica;
    size_t n;
    int ids[TB_MAX_REQUESTS]; /* indexes into tb.reqs */
    uint64_t dispatched_ns;
    uint64_t first_enqueued_ns;
};

static struct {
    pthread_mutex_t mutex;
    pthread_cond_t changed;
    bool defer;                 /* defer every request instead of answering */
    unsigned hold_ms;           /* run_batch sleeps this long first */
    serve_request *reqs[TB_MAX_REQUESTS];
    size_t nreqs;
    struct tb_batch batches[TB_MAX_BATCHES];
    size_t nbatches;
    serve_request *deferred[TB_MAX_REQUESTS]; /* not answered yet, in order */
    size_t ndeferred;
    int in_flight[TB_MAX_REPLICAS];     /* as the kind counts them */
    int max_in_flight[TB_MAX_REPLICAS];
    int delivered_status[TB_MAX_REQUESTS];
    size_t ndelivered;
    int started, stopped, opened, closed;
    bool busy;                  /* the async kind: a batch still runs */
    struct replica_base *last;  /* the replica of the last batch */
    pthread_t last_thread;      /* the thread that handed it over */
} tb = {.mutex = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER};

static int tb_index(const serve_request *req)
{
    for (size_t i = 0; i < tb.nreqs; i++)
        if (tb.reqs[i] == req) return (int)i;
    UNIT_FAIL("unknown request %p", (const void *)req);
}

static bool tb_open(const struct backend_spec *spec, struct replica_group *group, char *err,
                    size_t errlen)
{
    (void)spec, (void)err, (void)errlen;
    group->data = NULL;
    group->label = "fake";
    group->can_reconfigure = false;
    pthread_mutex_lock(&tb.mutex);
    tb.opened++;
    pthread_mutex_unlock(&tb.mutex);
    return true;
}

static void tb_close(struct replica_group *group)
{
    (void)group;
    pthread_mutex_lock(&tb.mutex);
    tb.closed++;
    pthread_mutex_unlock(&tb.mutex);
}

static bool tb_start(struct replica_base *r, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    ASSERT(r->index >= 0 && r->index < TB_MAX_REPLICAS);
    pthread_mutex_lock(&tb.mutex);
    tb.started++;
    pthread_mutex_unlock(&tb.mutex);
    return true;
}

static void tb_stop(struct replica_base *r)
{
    (void)r;
    pthread_mutex_lock(&tb.mutex);
    tb.stopped++;
    pthread_mutex_unlock(&tb.mutex);
}

static void tb_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {}
}

static int tb_run_batch(struct replica_base *r, serve_request **reqs, size_t n)
{
    pthread_mutex_lock(&tb.mutex);
    unsigned hold = tb.hold_ms;
    bool defer = tb.defer;
    ASSERT(tb.nbatches < TB_MAX_BATCHES);
    struct tb_batch *b = &tb.batches[tb.nbatches++];
    b->replica = r->index;
    b->n = n;
    b->dispatched_ns = reqs[0]->dispatched_ns;
    b->first_enqueued_ns = reqs[0]->enqueued_ns;
    for (size_t i = 0; i < n; i++) b->ids[i] = tb_index(reqs[i]);
    tb.in_flight[r->index] += (int)n;
    tb.busy = true;
    tb.last = r;
    tb.last_thread = pthread_self();
    if (tb.in_flight[r->index] > tb.max_in_flight[r->index])
        tb.max_in_flight[r->index] = tb.in_flight[r->index];
    pthread_cond_broadcast(&tb.changed);
    pthread_mutex_unlock(&tb.mutex);
    if (hold) tb_sleep_ms(hold);
    for (size_t i = 0; i < n; i++) {
        if (defer) {
            ASSERT_EQ(serve_request_defer(reqs[i]), SERVE_OK);
            pthread_mutex_lock(&tb.mutex);
            tb.deferred[tb.ndeferred++] = reqs[i];
            pthread_cond_broadcast(&tb.changed);
            pthread_mutex_unlock(&tb.mutex);
        } else {
            pthread_mutex_lock(&tb.mutex);
            tb.in_flight[r->index]--;
            pthread_mutex_unlock(&tb.mutex);
            ASSERT_EQ(serve_respond(reqs[i], 200, "text/plain", "ok", 2), SERVE_OK);
        }
    }
    return 0;
}

static const struct replica_kind tb_kind = {
    .name = "fake",
    .open = tb_open,
    .close = tb_close,
    .start = tb_start,
    .run_batch = tb_run_batch,
    .stop = tb_stop,
};

/* A kind whose run_batch returns before the batch ran (as the process
 * kind's): busy until the test says the batch is done. */
static bool tb_idle(struct replica_base *r)
{
    (void)r;
    pthread_mutex_lock(&tb.mutex);
    bool idle = !tb.busy;
    pthread_mutex_unlock(&tb.mutex);
    return idle;
}

static const struct replica_kind tb_async_kind = {
    .name = "fake-async",
    .open = tb_open,
    .close = tb_close,
    .start = tb_start,
    .run_batch = tb_run_batch,
    .idle = tb_idle,
    .stop = tb_stop,
};

/* The origin: records the status and drops the execution reference. */
static void tb_deliver(serve_request *req)
{
    pthread_mutex_lock(&tb.mutex);
    tb.delivered_status[tb_index(req)] = req->status;
    tb.ndelivered++;
    pthread_cond_broadcast(&tb.changed);
    pthread_mutex_unlock(&tb.mutex);
    request_release(req);
}

static const struct replica_kind *tb_kind_in_use = &tb_kind;

static struct backend *tb_backend(const char *name, uint32_t replicas, uint32_t max_batch,
                                  double wait_ms, uint32_t concurrency, uint32_t max_queued)
{
    struct backend_spec spec = {.name = (char *)name, .plugin = "fake"};
    backend_options_default(&spec.options);
    spec.options.num_replicas = replicas;
    spec.options.max_batch_size = max_batch;
    spec.options.batch_wait_timeout_ms = wait_ms;
    spec.options.max_concurrent_queries = concurrency;
    spec.options.max_queued_requests = max_queued;
    spec.config = config_new();
    char err[256] = "";
    struct backend *b = backend_create_with_kind(&spec, tb_kind_in_use, err, sizeof err);
    config_free(spec.config);
    if (!b) UNIT_FAIL("backend: %s", err);
    return b;
}

/* A new request, known to the fake kind by its index. */
static serve_request *tb_request(void)
{
    serve_request *req = request_new(0, NULL);
    ASSERT_NOT_NULL(req);
    req->method = "POST";
    req->path = "/";
    req->deliver = tb_deliver;
    pthread_mutex_lock(&tb.mutex);
    ASSERT(tb.nreqs < TB_MAX_REQUESTS);
    tb.reqs[tb.nreqs++] = req;
    pthread_mutex_unlock(&tb.mutex);
    return req;
}

static void tb_enqueue(struct backend *b, size_t count)
{
    for (size_t i = 0; i < count; i++) ASSERT_EQ(backend_enqueue(b, tb_request()), ENQUEUE_OK);
}

/* Waits (up to 20 s) until *counter reaches at least want. */
static void tb_wait_for(const size_t *counter, size_t want)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20;
    pthread_mutex_lock(&tb.mutex);
    while (*counter < want)
        if (pthread_cond_timedwait(&tb.changed, &tb.mutex, &until) != 0)
            UNIT_FAIL("waited 20 s for %zu, have %zu", want, *counter);
    pthread_mutex_unlock(&tb.mutex);
}

static size_t tb_locked(const size_t *counter)
{
    pthread_mutex_lock(&tb.mutex);
    size_t v = *counter;
    pthread_mutex_unlock(&tb.mutex);
    return v;
}

/* Answers the oldest deferred request (from this thread, not the worker). */
static void tb_answer_one(void)
{
    pthread_mutex_lock(&tb.mutex);
    ASSERT(tb.ndeferred > 0);
    serve_request *req = tb.deferred[0];
    memmove(tb.deferred, tb.deferred + 1, --tb.ndeferred * sizeof *tb.deferred);
    int replica = -1;
    for (size_t k = 0; k < tb.nbatches; k++)
        for (size_t i = 0; i < tb.batches[k].n; i++)
            if (tb.reqs[tb.batches[k].ids[i]] == req) replica = tb.batches[k].replica;
    tb.in_flight[replica]--;
    pthread_mutex_unlock(&tb.mutex);
    ASSERT_EQ(serve_respond(req, 200, "text/plain", "ok", 2), SERVE_OK);
}

/* Stops and releases b, then drops the origin references. */
static void tb_finish(struct backend *b)
{
    backend_stop(b);
    backend_release(b);
    ASSERT_EQ(tb.started, tb.stopped);
    ASSERT_EQ(tb.opened, 1);
    ASSERT_EQ(tb.closed, 1);
    for (size_t i = 0; i < tb.nreqs; i++) request_release(tb.reqs[i]);
}

/* Concatenated, the batches hold 0 .. count-1 in order. */
static void tb_assert_arrival_order(size_t count)
{
    size_t next = 0;
    for (size_t k = 0; k < tb.nbatches; k++)
        for (size_t i = 0; i < tb.batches[k].n; i++) ASSERT_EQ(tb.batches[k].ids[i], next++);
    ASSERT_EQ(next, count);
}

TEST_IMPL(batching_full_batch_at_once)
{
    /* batch_wait is 30 s: only a full batch can be dispatched in time. */
    struct backend *b = tb_backend("tb-full", 1, 4, 30000, 0, 100);
    uint64_t t0 = serve__now_ns();
    tb_enqueue(b, 8);
    tb_wait_for(&tb.ndelivered, 8);
    ASSERT(serve__now_ns() - t0 < 10000000000ull);
    ASSERT_EQ(tb.nbatches, 2);
    ASSERT_EQ(tb.batches[0].n, 4);
    ASSERT_EQ(tb.batches[1].n, 4);
    tb_assert_arrival_order(8);
    /* Three more wait for a fourth (or 30 s). */
    tb_enqueue(b, 3);
    tb_sleep_ms(300);
    ASSERT_EQ(tb_locked(&tb.nbatches), 2);
    tb_enqueue(b, 1);
    tb_wait_for(&tb.ndelivered, 12);
    ASSERT_EQ(tb.nbatches, 3);
    ASSERT_EQ(tb.batches[2].n, 4);
    tb_assert_arrival_order(12);
    for (size_t i = 0; i < 12; i++) ASSERT_EQ(tb.delivered_status[i], 200);
    tb_finish(b);
    return 0;
}

TEST_IMPL(batching_wait_after_first)
{
    /* Fewer than max batch: dispatched batch_wait after the first arrived. */
    struct backend *b = tb_backend("tb-wait", 1, 8, 300, 0, 100);
    tb_enqueue(b, 1);
    tb_sleep_ms(100);
    tb_enqueue(b, 2);
    tb_wait_for(&tb.ndelivered, 3);
    ASSERT_EQ(tb.nbatches, 1);
    ASSERT_EQ(tb.batches[0].n, 3);
    uint64_t waited = tb.batches[0].dispatched_ns - tb.batches[0].first_enqueued_ns;
    ASSERT(waited >= 300000000ull);   /* not before batch_wait */
    ASSERT(waited < 10000000000ull);  /* and not for ever */
    ASSERT_EQ(tb.batches[0].first_enqueued_ns, tb.reqs[0]->enqueued_ns);
    tb_assert_arrival_order(3);
    tb_finish(b);
    return 0;
}

TEST_IMPL(batching_never_more_than_max)
{
    /* A replica busy 200 ms per batch lets 11 requests pile up: they leave
     * in batches of at most 3, in arrival order. */
    tb.hold_ms = 200;
    struct backend *b = tb_backend("tb-max", 1, 3, 50, 0, 100);
    tb_enqueue(b, 11);
    tb_wait_for(&tb.ndelivered, 11);
    for (size_t k = 0; k < tb.nbatches; k++) ASSERT(tb.batches[k].n >= 1 && tb.batches[k].n <= 3);
    ASSERT(tb.nbatches >= 4);
    tb_assert_arrival_order(11);
    tb_finish(b);
    return 0;
}

TEST_IMPL(batching_concurrency_limit)
{
    /* Two replicas, each at most 2 in flight, requests deferred: 4 are
     * dispatched, the rest wait until answers free slots. */
    tb.defer = true;
    struct backend *b = tb_backend("tb-conc", 2, 4, 0, 2, 100);
    tb_enqueue(b, 9);
    tb_wait_for(&tb.ndeferred, 4);
    tb_sleep_ms(300);
    ASSERT_EQ(tb_locked(&tb.ndeferred), 4);
    for (size_t done = 0; done < 9; done++) {
        tb_answer_one();
        tb_wait_for(&tb.ndelivered, done + 1);
        size_t want = done + 1 + 4 < 9 ? 4 : 9 - done - 1; /* slots refilled */
        tb_wait_for(&tb.ndeferred, want);
    }
    ASSERT_EQ(tb.ndelivered, 9);
    for (int r = 0; r < 2; r++) ASSERT(tb.max_in_flight[r] <= 2);
    for (size_t k = 0; k < tb.nbatches; k++) ASSERT(tb.batches[k].n <= 2);
    for (size_t i = 0; i < 9; i++) ASSERT_EQ(tb.delivered_status[i], 200);
    tb_finish(b);
    return 0;
}

TEST_IMPL(batching_backpressure)
{
    /* One slot, held by a deferred request; two more queue; the fourth is
     * refused and counted. */
    tb.defer = true;
    struct backend *b = tb_backend("tb-bp", 1, 1, 0, 1, 2);
    tb_enqueue(b, 1);
    tb_wait_for(&tb.ndeferred, 1);
    tb_enqueue(b, 2);
    ASSERT_EQ(backend_enqueue(b, tb_request()), ENQUEUE_OVERLOADED);
    struct evbuffer *out = evbuffer_new();
    backend_write_metrics(&b, 1, out);
    evbuffer_add(out, "", 1);
    const char *text = (const char *)evbuffer_pullup(out, -1);
    ASSERT(strstr(text, "serve_requests_rejected_total{backend=\"tb-bp\",reason=\"backpressure\"} 1\n"));
    ASSERT(strstr(text, "serve_backend_queued_requests{backend=\"tb-bp\"} 2\n"));
    evbuffer_free(out);
    /* Room again once the queue moves. */
    tb_answer_one();
    tb_wait_for(&tb.ndeferred, 1);
    tb_wait_for(&tb.ndelivered, 1);
    ASSERT_EQ(backend_enqueue(b, tb_request()), ENQUEUE_OK);
    for (size_t done = 1; done < 4; done++) {
        tb_wait_for(&tb.ndeferred, 1);
        tb_answer_one();
        tb_wait_for(&tb.ndelivered, done + 1);
    }
    ASSERT_EQ(tb.delivered_status[0], 200);
    ASSERT_EQ(tb.delivered_status[3], 0); /* the refused one never went in */
    tb_finish(b);
    return 0;
}

TEST_IMPL(batching_stop_with_queued_work)
{
    /* Stop finishes what is queued (without waiting for batch_wait), then
     * answers what is still deferred with 503, after the kind's stop. */
    tb.hold_ms = 100;
    struct backend *b = tb_backend("tb-stop", 1, 2, 30000, 0, 100);
    tb_enqueue(b, 7);
    uint64_t t0 = serve__now_ns();
    backend_stop(b);
    ASSERT(serve__now_ns() - t0 < 20000000000ull);
    ASSERT_EQ(tb.ndelivered, 7);
    for (size_t i = 0; i < 7; i++) ASSERT_EQ(tb.delivered_status[i], 200);
    tb_assert_arrival_order(7);
    for (size_t k = 0; k < tb.nbatches; k++) ASSERT(tb.batches[k].n <= 2);
    serve_request *late = request_new(0, NULL);
    ASSERT_NOT_NULL(late);
    ASSERT_EQ(backend_enqueue(b, late), ENQUEUE_CLOSED);
    request_release(late);
    backend_release(b);
    for (size_t i = 0; i < tb.nreqs; i++) request_release(tb.reqs[i]);

    /* Deferred and never answered: 503 from the backend at stop. */
    memset(&tb.batches, 0, sizeof tb.batches);
    tb.nbatches = tb.nreqs = tb.ndelivered = tb.ndeferred = 0;
    tb.hold_ms = 0;
    tb.defer = true;
    b = tb_backend("tb-stop2", 1, 4, 0, 4, 100);
    tb_enqueue(b, 3);
    tb_wait_for(&tb.ndeferred, 3);
    backend_stop(b);
    ASSERT_EQ(tb.ndelivered, 3);
    for (size_t i = 0; i < 3; i++) {
        ASSERT_EQ(tb.delivered_status[i], 503);
        static const char want[] = "backend tb-stop2 stopped before its plugin answered";
        ASSERT(memmem(tb.reqs[i]->response_body, tb.reqs[i]->response_len, want,
                      sizeof want - 1));
    }
    ASSERT_EQ(tb.started, 2);
    ASSERT_EQ(tb.stopped, 2);
    backend_release(b);
    ASSERT_EQ(tb.closed, 2);
    for (size_t i = 0; i < tb.nreqs; i++) request_release(tb.reqs[i]);
    return 0;
}

TEST_IMPL(batching_held_wakeups)
{
    /* An I/O thread holds the wake-ups of one pass: an idle replica (wait
     * 0, max batch 8) is not woken by the pass's enqueues, then takes them
     * all as one batch once the pass ends. Without the hold, the first
     * request would leave alone. */
    struct backend *b = tb_backend("tb-held", 1, 8, 0, 0, 100);
    tb_sleep_ms(100); /* the replica is parked */
    backend_hold_wakeups(true);
    tb_enqueue(b, 5);
    tb_sleep_ms(300);
    ASSERT_EQ(tb_locked(&tb.nbatches), 0);
    backend_flush_wakeups();
    backend_hold_wakeups(false);
    tb_wait_for(&tb.ndelivered, 5);
    ASSERT_EQ(tb.nbatches, 1);
    ASSERT_EQ(tb.batches[0].n, 5);
    tb_assert_arrival_order(5);
    tb_finish(b);
    return 0;
}

TEST_IMPL(batching_async_kind_partial_batch_waits_for_idle)
{
    /* A kind that runs batches elsewhere: while its replica is busy, a full
     * batch goes at once (it can wait in the replica's ring), a partial one
     * forms only once the replica is idle, so that what arrives meanwhile
     * joins it, as with a thread replica. */
    tb.defer = true;
    tb_kind_in_use = &tb_async_kind;
    struct backend *b = tb_backend("tb-async", 1, 4, 0, 16, 100);
    tb_enqueue(b, 1);
    tb_wait_for(&tb.nbatches, 1);
    tb_enqueue(b, 2);
    tb_sleep_ms(300);
    ASSERT_EQ(tb_locked(&tb.nbatches), 1); /* partial, and the replica is busy */
    tb_enqueue(b, 2);
    tb_wait_for(&tb.nbatches, 2);          /* full: goes while busy */
    ASSERT_EQ(tb.batches[1].n, 4);
    tb_enqueue(b, 1);
    tb_sleep_ms(300);
    ASSERT_EQ(tb_locked(&tb.nbatches), 2);
    pthread_mutex_lock(&tb.mutex);
    tb.busy = false;
    struct replica_base *r = tb.last;
    pthread_mutex_unlock(&tb.mutex);
    backend_replica_wake(r);               /* the batch ended */
    tb_wait_for(&tb.ndeferred, 6);         /* the third batch is in (and deferred) */
    ASSERT_EQ(tb.nbatches, 3);
    ASSERT_EQ(tb.batches[2].n, 1);
    tb_assert_arrival_order(6);
    for (int i = 0; i < 6; i++) tb_answer_one();
    tb_wait_for(&tb.ndelivered, 6);
    tb_finish(b);
    return 0;
}

TEST_IMPL(batching_async_kind_gets_whole_batches)
{
    /* Answers of an async kind come back a few at a time: the slots one
     * answer frees do not make a batch of one while full batches wait. */
    tb.defer = true;
    tb_kind_in_use = &tb_async_kind;
    struct backend *b = tb_backend("tb-whole", 1, 4, 0, 8, 100);
    /* The 12 arrive together, as one pass of an I/O thread hands them over
     * (wake-ups held): a worker woken by the first alone would, with no
     * batch wait, rightly take a batch of one (seen under TSan). */
    tb_sleep_ms(500); /* the worker parks (wide: sanitized builds are slow) */
    backend_hold_wakeups(true);
    tb_enqueue(b, 12);
    backend_flush_wakeups();
    backend_hold_wakeups(false);
    tb_wait_for(&tb.ndeferred, 8); /* two batches, 8 in flight: the limit */
    tb_answer_one();
    tb_sleep_ms(300);
    ASSERT_EQ(tb_locked(&tb.nbatches), 2);
    for (int i = 0; i < 3; i++) tb_answer_one();
    tb_wait_for(&tb.ndeferred, 8); /* the third batch, whole */
    ASSERT_EQ(tb.nbatches, 3);
    ASSERT_EQ(tb.batches[2].n, 4);
    tb_assert_arrival_order(12);
    for (int i = 0; i < 8; i++) tb_answer_one();
    tb_wait_for(&tb.ndelivered, 12);
    tb_finish(b);
    return 0;
}

TEST_IMPL(batching_async_kind_max_batch_one_from_the_enqueuer)
{
    /* Nothing to batch: the enqueuing thread hands the request to the idle
     * replica itself, with no wake-up of the replica's worker. */
    tb.defer = true;
    tb_kind_in_use = &tb_async_kind;
    struct backend *b = tb_backend("tb-one", 1, 1, 0, 8, 100);
    tb_sleep_ms(500); /* the worker parks (wide: sanitized builds are slow) */
    tb_enqueue(b, 1);
    ASSERT_EQ(tb_locked(&tb.nbatches), 1); /* already: on this thread */
    ASSERT(pthread_equal(tb.last_thread, pthread_self()));
    tb_enqueue(b, 3);
    tb_wait_for(&tb.ndeferred, 4);
    tb_assert_arrival_order(4);
    for (int i = 0; i < 4; i++) tb_answer_one();
    tb_wait_for(&tb.ndelivered, 4);
    tb_finish(b);
    return 0;
}
