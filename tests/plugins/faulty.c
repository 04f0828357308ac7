/* faulty - a plugin that misbehaves on request, for the runtime's tests.
 * The body says what to do with that request:
 *   ok          answer 200 "ok batch=N"
 *   fail        answer 500 through serve_respond_error
 *   skip        return without answering
 *   twice       answer twice
 *   sleep:MS    sleep MS milliseconds in handle_batch, then answer
 *   defer:MS    defer, answer 200 from another thread after MS ms
 *   never       defer and never answer
 *   slow-cancel defer and never answer; its cancel callback takes 500 ms,
 *               then reads the replica's state (freed by destroy)
 *   crashbatch  return non-zero from handle_batch without answering
 *   timing      answer {"received": NS, "queued": NS, "dispatched": NS}
 *   count       answer how many requests this process's replicas were handed
 *   wait-cancel:MS  work up to MS ms, stopping once serve_request_cancelled
 *   cancels     answer how many wait-cancel requests saw their cancel
 *   slow-echo:MS:...  sleep MS milliseconds, then answer the whole body
 *   segv        dereference NULL in handle_batch (the replica's thread)
 *   thread-segv defer, then dereference NULL in a thread of the plugin's own,
 *               which runs no replica (the crash report names the .so)
 *   segv0       dereference NULL in replica 0; answer "ok" in the others
 *   abort       abort()
 *   exit        exit(3)
 *   loop        spin for ever in handle_batch
 *   grow        allocate and touch memory without end
 *   stream:N:MS     stream N pieces "piece I\n", one every MS ms, from a
 *                   thread of the plugin's (serve_stream_write_take); stops
 *                   when the client goes
 *   stream-big:N    stream N bytes in 64 KiB pieces as fast as the client
 *                   reads, waiting for "writable again" on SERVE_EAGAIN
 *   stream-fail     stream one piece, then fail the stream
 *   stream-crash    stream one piece, then crash (a thread of the plugin's)
 *   stream-stats    answer "eagain=A writable=W cancels=C" of the streams
 * Config:
 *   crash_init_if=PATH  init dereferences NULL while PATH exists (a
 *                       replica whose restart keeps failing) */
#include <pthread.h>
#include <serve/plugin.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

struct later {
    serve_request *req;
    long ms;
};

static void *answer_later(void *arg)
{
    struct later *l = arg;
    sleep_ms(l->ms);
    serve_respond(l->req, 200, "text/plain", "deferred", 8);
    free(l);
    return NULL;
}

/* ---- Streams, written from a thread of the plugin's ---- */

static atomic_ulong stream_eagain, stream_writable, stream_cancels;

struct streamer {
    serve_request *req;
    long count, ms, bytes;
    int mode; /* 0 pieces, 1 big, 2 fail, 3 crash */
    pthread_mutex_t lock;
    pthread_cond_t room;
    int writable;
};

static void on_writable(serve_request *req, void *arg)
{
    (void)req;
    struct streamer *s = arg;
    atomic_fetch_add(&stream_writable, 1);
    pthread_mutex_lock(&s->lock);
    s->writable = 1;
    pthread_cond_signal(&s->room);
    pthread_mutex_unlock(&s->lock);
}

static void crash(void);

static void *stream_main(void *arg)
{
    struct streamer *s = arg;
    serve_request *req = s->req;
    if (s->mode == 1) {
        static char piece[65536];
        memset(piece, 'x', sizeof piece);
        long left = s->bytes;
        while (left > 0) {
            size_t n = left < (long)sizeof piece ? (size_t)left : sizeof piece;
            int rc = serve_stream_write(req, piece, n);
            if (rc == SERVE_EAGAIN) {
                atomic_fetch_add(&stream_eagain, 1);
                pthread_mutex_lock(&s->lock);
                s->writable = 0;
                pthread_mutex_unlock(&s->lock);
                serve_stream_on_writable(req, on_writable, s);
                pthread_mutex_lock(&s->lock);
                while (!s->writable) pthread_cond_wait(&s->room, &s->lock);
                pthread_mutex_unlock(&s->lock);
                continue;
            }
            if (rc != SERVE_OK) break;
            left -= (long)n;
        }
    } else if (s->mode == 0) {
        for (long i = 0; i < s->count; i++) {
            /* Handed over without a copy: the runtime frees it once sent. */
            char *piece = malloc(32);
            int n = snprintf(piece, 32, "piece %ld\n", i);
            int rc = serve_stream_write_take(req, piece, (size_t)n, free);
            if (rc != SERVE_OK) free(piece); /* not taken */
            if (rc == SERVE_ETIMEDOUT) break;
            if (i + 1 < s->count) sleep_ms(s->ms);
        }
    } else {
        serve_stream_write(req, "partial\n", 8);
        sleep_ms(100);
        if (s->mode == 3) crash();
        serve_stream_fail(req, "faulty: the stream failed on purpose");
        free(s);
        return NULL;
    }
    if (serve_request_cancelled(req)) atomic_fetch_add(&stream_cancels, 1);
    serve_stream_end(req);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->room);
    free(s);
    return NULL;
}

static void start_stream(serve_request *req, int mode, long a, long b)
{
    if (serve_stream_begin(req, 200, "text/plain") != SERVE_OK) return;
    struct streamer *s = calloc(1, sizeof *s);
    s->req = req;
    s->mode = mode;
    s->count = a;
    s->bytes = a;
    s->ms = b;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->room, NULL);
    pthread_t t;
    pthread_create(&t, NULL, stream_main, s);
    pthread_detach(t);
}

static void *volatile grown;

/* Volatile: the compiler may not drop or move the faulting store. Not
 * instrumented by UBSan, which would end the process itself (exit status 1,
 * "store to null pointer"): the crash under test is a real SIGSEGV. */
__attribute__((no_sanitize("undefined"))) static void crash(void)
{
    volatile int *nowhere = NULL;
    *nowhere = 1;
}

static void *crash_later(void *arg)
{
    (void)arg;
    sleep_ms(50);
    crash();
    return NULL;
}

/* Requests this process's replicas were handed: "count" answers it. */
static atomic_ulong executed;
/* wait-cancel requests that saw serve_request_cancelled: "cancels". */
static atomic_ulong cancels_seen;

static int faulty_batch(void *state, serve_request *const *requests, size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        serve_request *req = requests[i];
        size_t len;
        const char *body = serve_request_body(req, &len);
        char what[64];
        snprintf(what, sizeof what, "%.*s", (int)(len < 63 ? len : 63), body);
        unsigned long seen = atomic_fetch_add(&executed, 1) + 1;
        char ok[64];
        int oklen = snprintf(ok, sizeof ok, "ok batch=%zu", n);
        if (strcmp(what, "fail") == 0) {
            serve_respond_error(req, 500, "faulty: this request failed");
        } else if (strcmp(what, "skip") == 0) {
            /* no answer: the runtime must answer 500 */
        } else if (strcmp(what, "twice") == 0) {
            serve_respond(req, 200, "text/plain", ok, (size_t)oklen);
            if (serve_respond(req, 200, "text/plain", "second", 6) != SERVE_EALREADY)
                serve_log(NULL, SERVE_LOG_ERROR, "faulty: second answer was not refused");
        } else if (strncmp(what, "sleep:", 6) == 0) {
            sleep_ms(atol(what + 6));
            serve_respond(req, 200, "text/plain", ok, (size_t)oklen);
        } else if (strncmp(what, "wait-cancel:", 12) == 0) {
            /* A long job that checks, every 2 ms, whether anyone still
             * waits for it, and stops when not. */
            long left = atol(what + 12);
            while (left > 0 && !serve_request_cancelled(req)) {
                sleep_ms(2);
                left -= 2;
            }
            if (serve_request_cancelled(req)) atomic_fetch_add(&cancels_seen, 1);
            serve_respond(req, 200, "text/plain", "done", 4); /* dropped when cancelled */
        } else if (strcmp(what, "cancels") == 0) {
            char out[32];
            int k = snprintf(out, sizeof out, "%lu", atomic_load(&cancels_seen));
            serve_respond(req, 200, "text/plain", out, (size_t)k);
        } else if (strcmp(what, "count") == 0) {
            char out[32];
            int k = snprintf(out, sizeof out, "%lu", seen);
            serve_respond(req, 200, "text/plain", out, (size_t)k);
        } else if (strncmp(what, "slow-echo:", 10) == 0) {
            sleep_ms(atol(what + 10));
            serve_respond(req, 200, "application/octet-stream", body, len);
        } else if (strncmp(what, "defer:", 6) == 0) {
            struct later *l = malloc(sizeof *l);
            l->req = req;
            l->ms = atol(what + 6);
            serve_request_defer(req);
            pthread_t t;
            pthread_create(&t, NULL, answer_later, l);
            pthread_detach(t);
        } else if (strcmp(what, "slow-cancel") == 0) {
            serve_request_defer(req); /* answered 503 by the backend's stop */
        } else if (strcmp(what, "never") == 0) {
            serve_request_defer(req);
        } else if (strcmp(what, "timing") == 0) {
            char out[160];
            int n = snprintf(out, sizeof out, "{\"received\": %llu, \"queued\": %llu, \"dispatched\": %llu}",
                             (unsigned long long)serve_request_time_ns(req, SERVE_STAGE_RECEIVED),
                             (unsigned long long)serve_request_time_ns(req, SERVE_STAGE_QUEUED),
                             (unsigned long long)serve_request_time_ns(req, SERVE_STAGE_DISPATCHED));
            serve_respond(req, 200, "application/json", out, (size_t)n);
        } else if (strcmp(what, "segv") == 0) {
            crash();
        } else if (strcmp(what, "segv0") == 0) {
            if (*(const int *)state == 0) crash();
            serve_respond(req, 200, "text/plain", ok, (size_t)oklen);
        } else if (strcmp(what, "thread-segv") == 0) {
            serve_request_defer(req);
            pthread_t t;
            pthread_create(&t, NULL, crash_later, NULL);
            pthread_detach(t);
        } else if (strcmp(what, "abort") == 0) {
            abort();
        } else if (strcmp(what, "exit") == 0) {
            exit(3);
        } else if (strcmp(what, "loop") == 0) {
            for (volatile unsigned long spin = 0;; spin++) {
            }
        } else if (strcmp(what, "grow") == 0) {
            for (;;) {
                char *block = malloc(1 << 20);
                if (!block) continue;
                memset(block, 1, 1 << 20);
                *(void **)block = grown; /* kept, so the compiler keeps them */
                grown = block;
            }
        } else if (strncmp(what, "stream:", 7) == 0) {
            char *colon = strchr(what + 7, ':');
            start_stream(req, 0, atol(what + 7), colon ? atol(colon + 1) : 0);
        } else if (strncmp(what, "stream-big:", 11) == 0) {
            start_stream(req, 1, atol(what + 11), 0);
        } else if (strcmp(what, "stream-fail") == 0) {
            start_stream(req, 2, 0, 0);
        } else if (strcmp(what, "stream-crash") == 0) {
            start_stream(req, 3, 0, 0);
        } else if (strcmp(what, "stream-stats") == 0) {
            char out[96];
            int k = snprintf(out, sizeof out, "eagain=%lu writable=%lu cancels=%lu",
                             atomic_load(&stream_eagain), atomic_load(&stream_writable),
                             atomic_load(&stream_cancels));
            serve_respond(req, 200, "text/plain", out, (size_t)k);
        } else if (strcmp(what, "crashbatch") == 0) {
            rc = -1;
        } else {
            serve_respond(req, 200, "text/plain", ok, (size_t)oklen);
        }
    }
    return rc;
}

static void faulty_destroy(void *state) { free(state); }

/* slow-cancel: the cancel callback takes 500 ms, then reads the replica's
 * state, which must still be there (the replica's stop waits for it). */
static void faulty_cancel(void *state, serve_request *req)
{
    size_t len;
    const char *body = serve_request_body(req, &len);
    if (len != 11 || memcmp(body, "slow-cancel", 11) != 0) return;
    sleep_ms(500);
    if (*(volatile int *)state < 0) serve_log(NULL, SERVE_LOG_ERROR, "faulty: bad state");
}

static int faulty_init(serve_replica *replica, const serve_config *config, void **state)
{
    int index = serve_replica_index(replica);
    int *own = malloc(sizeof *own); /* freed by destroy: a late callback would touch freed memory */
    if (!own) return -1;
    *own = index;
    *state = own;
    const char *path = serve_config_get(config, "crash_init_if");
    if (path && access(path, F_OK) == 0) crash();
    return 0;
}

static const serve_plugin plugin = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "faulty",
    .init = faulty_init,
    .handle_batch = faulty_batch,
    .destroy = faulty_destroy,
    .cancel = faulty_cancel,
};

SERVE_PLUGIN_DEFINE(plugin)
