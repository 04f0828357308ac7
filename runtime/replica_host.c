/* replica_host.c - the replica's side of a process replica.
 *
 * The server spawns its own binary as `serve __replica-host MEMFD WAKEFD
 * PARENT` (replica_process.c). This process maps the channel, loads the
 * plugin, runs init, then serves: requests arrive on the work ring and run
 * as batches on this process's main thread, exactly as a thread replica's
 * worker runs them; answers, whether given during handle_batch or later
 * from any plugin thread, go back on the answers ring; handle calls go to
 * the server, which routes them, and their results come back on the
 * results ring to a thread of their own. The plugin sees the same SDK as
 * in a thread replica: these are the same request objects and functions,
 * with request_set_host and handles_set_forwarder pointing their ends
 * here instead of at a backend.
 *
 * Nothing here outlives the server: the process asks the kernel for
 * SIGKILL when the server thread that spawned it ends. */
#include "replica_host.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "clock.h"
#include "config_typed.h"
#include "crash_report.h"
#include "handles.h"
#include "loader.h"
#include "log.h"
#include "metrics.h"
#include "replica_channel.h"
#include "replica_context.h"
#include "replica_kind.h"
#include "spec.h"
#include "stream.h"

struct pending_call {
    struct pending_call *next;
    uint64_t id;
    serve_request *call;
};

static struct {
    struct replica_channel ch;
    struct shm_ring_end work, results, answers;
    struct wire_out out;         /* answers' heads; under the answers ring's lock */
    struct plugin_lib lib;
    bool loaded;
    void *state;
    serve_replica context;
    char *backend;
    int index;
    pthread_mutex_t calls_lock;  /* guards calls and deferred */
    struct pending_call *calls;  /* handle calls waiting for their result */
    serve_request *deferred;     /* deferred requests not answered yet */
    uint32_t deferred_count;
    uint32_t max_batch;
    /* Held while a call's callback runs; `stopping` (under it) ends them,
     * so that no callback runs during or after the plugin's destroy. */
    pthread_mutex_t results_lock;
    bool stopping;
    uint64_t next_call_id;
    struct log_rate batch_failures; /* the main thread's */
    serve_request **admitted;    /* the batch as the plugin sees it (tensor_admit) */
    size_t admitted_cap;
} host = {.ch = {.memfd = -1}, .calls_lock = PTHREAD_MUTEX_INITIALIZER,
          .results_lock = PTHREAD_MUTEX_INITIALIZER};

/* Under the answers lock: one answer, from the request's stored fields. */
static bool put_answer(serve_request *req)
{
    struct wire_out *w = &host.out;
    wire_reset(w);
    wire_u32(w, req->slot);
    wire_u32(w, (uint32_t)req->status);
    wire_str(w, req->content_type);
    for (size_t i = 0; i < req->response_header_count; i++) {
        wire_str(w, req->response_headers[i].name);
        wire_str(w, req->response_headers[i].value);
    }
    return channel_put(&host.answers, MSG_ANSWER, w, (uint32_t)req->response_header_count,
                       req->response_body, req->response_len);
}

/* The plugin's thread in handle_batch: the request will be answered later. */
static void defer(serve_request *req)
{
    pthread_mutex_lock(&host.calls_lock);
    req->deferred = true;
    req->deferred_prev = NULL;
    req->deferred_next = host.deferred;
    if (host.deferred) host.deferred->deferred_prev = req;
    host.deferred = req;
    host.deferred_count++;
    pthread_mutex_unlock(&host.calls_lock);
}

static void forget_deferred(serve_request *req)
{
    if (req->deferred_prev)
        req->deferred_prev->deferred_next = req->deferred_next;
    else
        host.deferred = req->deferred_next;
    if (req->deferred_next) req->deferred_next->deferred_prev = req->deferred_prev;
    req->deferred_prev = req->deferred_next = NULL;
    host.deferred_count--;
}

/* Any thread: a deferred request was answered. */
static void deferred_answered(serve_request *req, bool answer_won)
{
    (void)answer_won; /* no timeouts here: the server keeps them */
    pthread_mutex_lock(&host.calls_lock);
    forget_deferred(req);
    pthread_mutex_unlock(&host.calls_lock);
    shm_ring_lock(&host.answers);
    put_answer(req);
    shm_ring_end_message(&host.answers);
    shm_ring_unlock(&host.answers);
    request_release(req); /* the host's */
}

static void report_bug(const serve_request *req, const char *what)
{
    LOG_ERROR("backend=%s replica=%d request=%s: plugin bug: %s", host.backend, host.index,
              req && req->id ? req->id : "-", what);
}

static bool cancelled(const serve_request *req)
{
    uint32_t slot = req->slot;
    if (slot >= CHANNEL_CANCEL_SLOTS) return false;
    uint64_t word = atomic_load_explicit(&host.ch.shared->cancelled[slot / 64], memory_order_relaxed);
    return (word >> (slot % 64)) & 1;
}

/* ---- Streams: each piece goes to the server as it is written ---- */

/* Under the answers lock: the head of a stream. */
static int stream_begin(serve_request *req, int status, const char *content_type)
{
    if (cancelled(req)) {
        /* Nobody waits: finished as an answer the server drops. */
        request_store_answer(req, 499, "application/json", NULL, 0, NULL);
        deferred_answered(req, false);
        return SERVE_ETIMEDOUT;
    }
    /* Under the lock the results thread finds requests with. */
    pthread_mutex_lock(&host.calls_lock);
    bool attached = stream_attach(req);
    pthread_mutex_unlock(&host.calls_lock);
    if (!attached) return SERVE_ENOMEM;
    shm_ring_lock(&host.answers);
    struct wire_out *w = &host.out;
    wire_reset(w);
    wire_u32(w, req->slot);
    wire_u32(w, (uint32_t)status);
    wire_str(w, content_type ? content_type : "application/octet-stream");
    for (size_t i = 0; i < req->response_header_count; i++) {
        wire_str(w, req->response_headers[i].name);
        wire_str(w, req->response_headers[i].value);
    }
    channel_put(&host.answers, MSG_STREAM_BEGIN, w, (uint32_t)req->response_header_count, NULL, 0);
    shm_ring_end_message(&host.answers);
    shm_ring_unlock(&host.answers);
    return SERVE_OK;
}

static int stream_write(serve_request *req, const void *data, size_t len)
{
    if (len == 0) return SERVE_OK;
    bool tell_blocked;
    int rc = stream_reserve(req, len, &tell_blocked); /* the bound, counted here */
    if (rc != SERVE_OK && !tell_blocked) return rc;
    shm_ring_lock(&host.answers);
    struct wire_out *w = &host.out;
    wire_reset(w);
    wire_u32(w, req->slot);
    if (rc != SERVE_OK) { /* the server reports the next drain at once */
        channel_put(&host.answers, MSG_STREAM_BLOCKED, w, 0, NULL, 0);
        shm_ring_end_message(&host.answers);
        shm_ring_unlock(&host.answers);
        return rc;
    }
    channel_put(&host.answers, MSG_STREAM_DATA, w, 0, data, len);
    shm_ring_end_message(&host.answers);
    shm_ring_unlock(&host.answers);
    return SERVE_OK;
}

static int stream_finish(serve_request *req, const char *fail_message)
{
    int rc = cancelled(req) ? SERVE_ETIMEDOUT : SERVE_OK;
    pthread_mutex_lock(&host.calls_lock);
    forget_deferred(req);
    pthread_mutex_unlock(&host.calls_lock);
    shm_ring_lock(&host.answers);
    struct wire_out *w = &host.out;
    wire_reset(w);
    wire_u32(w, req->slot);
    wire_u32(w, fail_message != NULL);
    wire_str(w, fail_message);
    channel_put(&host.answers, MSG_STREAM_END, w, 0, NULL, 0);
    shm_ring_end_message(&host.answers);
    shm_ring_unlock(&host.answers);
    request_release(req); /* the host's */
    return rc;
}

static int cancel_calls(serve_request *req);

static const struct request_host request_host = {.defer = defer,
                                                 .deferred_answered = deferred_answered,
                                                 .report_bug = report_bug,
                                                 .cancelled = cancelled,
                                                 .stream_begin = stream_begin,
                                                 .stream_write = stream_write,
                                                 .stream_finish = stream_finish,
                                                 .cancel_calls = cancel_calls};

/* The results thread: the request of `slot` that the plugin holds
 * deferred, referenced; NULL when none does. */
static serve_request *deferred_in_slot(uint32_t slot, bool *streaming)
{
    pthread_mutex_lock(&host.calls_lock);
    serve_request *req = host.deferred;
    while (req && req->slot != slot) req = req->deferred_next;
    if (req) request_ref(req);
    *streaming = req && req->stream; /* attached under this lock */
    pthread_mutex_unlock(&host.calls_lock);
    return req;
}

/* The results thread, under results_lock: a note about a request. */
static void on_note(uint32_t type, struct wire_in *r)
{
    uint32_t slot = wire_get_u32(r);
    uint64_t value = wire_get_u64(r);
    if (r->bad) return;
    bool streaming;
    serve_request *req = deferred_in_slot(slot, &streaming);
    if (!req) return;
    if (type == MSG_CANCEL) {
        if (host.lib.plugin->cancel) host.lib.plugin->cancel(host.state, req);
        if (streaming) stream_cancelled(req);
    } else if (streaming) {
        stream_drained_update(req, value);
    }
    request_release(req);
}

/* Any thread: a handle call goes to the server. */
static int forward_call(serve_request *call)
{
    struct pending_call *p = malloc(sizeof *p);
    if (!p) {
        handles_fail_forwarded(call, 503, "out of memory in the replica process");
        return SERVE_OK;
    }
    /* Registered and sent under calls_lock: its result (which frees the
     * call, on the results thread, after take_call under this lock) can
     * only follow the message, through the server, and the lock makes
     * that order one a thread checker sees too. The answers ring is only
     * ever locked inside calls_lock, never the other way round. */
    pthread_mutex_lock(&host.calls_lock);
    uint64_t id = p->id = ++host.next_call_id;
    p->call = call;
    p->next = host.calls;
    host.calls = p;
    shm_ring_lock(&host.answers);
    struct wire_out *w = &host.out;
    wire_reset(w);
    wire_u64(w, id);
    wire_u32(w, call->parent_slot);
    wire_str(w, call->target_endpoint);
    for (size_t i = 0; i < call->header_count; i++) {
        wire_str(w, call->headers[2 * i]);
        wire_str(w, call->headers[2 * i + 1]);
    }
    wire_u32(w, (uint32_t)call->query_count);
    for (size_t i = 0; i < 2 * call->query_count; i++) wire_str(w, call->query[i]);
    wire_u32(w, call->call_chunk != NULL);
    channel_put(&host.answers, MSG_CALL, w, (uint32_t)call->header_count, call->body,
                call->body_len);
    shm_ring_end_message(&host.answers);
    shm_ring_unlock(&host.answers);
    pthread_mutex_unlock(&host.calls_lock);
    return SERVE_OK;
}

static serve_request *take_call(uint64_t id)
{
    pthread_mutex_lock(&host.calls_lock);
    serve_request *call = NULL;
    for (struct pending_call **link = &host.calls; *link; link = &(*link)->next) {
        if ((*link)->id != id) continue;
        struct pending_call *p = *link;
        *link = p->next;
        call = p->call;
        free(p);
        break;
    }
    pthread_mutex_unlock(&host.calls_lock);
    return call;
}

/* The results thread: a call still waiting for its result (left there). */
static serve_request *find_call(uint64_t id)
{
    pthread_mutex_lock(&host.calls_lock);
    serve_request *call = NULL;
    for (struct pending_call *p = host.calls; p && !call; p = p->next)
        if (p->id == id) call = p->call;
    pthread_mutex_unlock(&host.calls_lock);
    return call;
}

/* The plugin cancels the calls it made for `req`: the server holds them. */
static int cancel_calls(serve_request *req)
{
    shm_ring_lock(&host.answers);
    struct wire_out *w = &host.out;
    wire_reset(w);
    wire_u32(w, req->slot);
    channel_put(&host.answers, MSG_CANCEL_CALLS, w, 0, NULL, 0);
    shm_ring_end_message(&host.answers);
    shm_ring_unlock(&host.answers);
    return SERVE_OK;
}

/* The results thread: completes handle calls as their results arrive. */
static void *results_main(void *unused)
{
    (void)unused;
    struct wire_out head = {0};
    struct response_header *headers = NULL;
    for (;;) {
        uint32_t type;
        struct wire_prefix prefix;
        if (!channel_get(&host.results, shm_ring_wait_futex, NULL, &type, &prefix, &head)) break;
        if (type == MSG_CANCEL || type == MSG_STREAM_DRAINED) {
            channel_skip(&host.results, prefix.body_len, shm_ring_wait_futex, NULL);
            struct wire_in r = wire_in_of(&head);
            pthread_mutex_lock(&host.results_lock);
            bool stopping = host.stopping;
            if (!stopping) on_note(type, &r);
            pthread_mutex_unlock(&host.results_lock);
            if (stopping) break;
            continue;
        }
        void *body = malloc(prefix.body_len ? prefix.body_len : 1);
        if (!body) abort(); /* the stream cannot be resynchronised */
        shm_ring_read(&host.results, body, prefix.body_len, shm_ring_wait_futex, NULL);
        struct wire_in r = wire_in_of(&head);
        uint64_t id = wire_get_u64(&r);
        if (type == MSG_CALL_CHUNK) {
            /* Pieces come before the result, on this thread alone: the
             * call is still there. */
            serve_request *call = r.bad ? NULL : find_call(id);
            pthread_mutex_lock(&host.results_lock);
            bool stopping = host.stopping;
            if (call && call->call_chunk && !stopping)
                call->call_chunk(body, prefix.body_len, call->call_arg);
            pthread_mutex_unlock(&host.results_lock);
            free(body);
            if (stopping) break;
            continue;
        }
        int status = (int)wire_get_u32(&r);
        const char *ctype = wire_get_str(&r);
        struct response_header *grown = realloc(headers, (prefix.count + 1) * sizeof *grown);
        if (!grown) abort();
        headers = grown;
        for (uint32_t i = 0; i < prefix.count; i++) {
            headers[i].name = (char *)wire_get_str(&r);
            headers[i].value = (char *)wire_get_str(&r);
        }
        serve_request *call = type == MSG_CALL_RESULT && !r.bad ? take_call(id) : NULL;
        pthread_mutex_lock(&host.results_lock);
        bool stopping = host.stopping;
        if (call && !stopping) {
            serve_result result = {.status = status, .content_type = ctype, .body = body,
                                   .len = prefix.body_len, .headers = headers,
                                   .header_count = prefix.count};
            handles_complete_forwarded(call, &result);
        }
        pthread_mutex_unlock(&host.results_lock);
        free(body);
        if (stopping) break;
    }
    wire_free(&head);
    free(headers);
    return NULL;
}

/* A request from a MSG_REQUEST whose head is in `head`; its body is read
 * from the ring straight into the request's own allocation. */
static serve_request *read_request(const struct wire_out *head, const struct wire_prefix *p)
{
    size_t pointers = 2 * (size_t)p->count * sizeof(char *);
    char *extra;
    serve_request *req = request_new(pointers + head->len + p->body_len + 1, &extra);
    if (!req) abort();
    const char **headers = (const char **)extra;
    char *strings = extra + pointers;
    memcpy(strings, head->buf, head->len);
    char *body = strings + head->len;
    shm_ring_read(&host.work, body, p->body_len, shm_ring_wait_futex, NULL);
    body[p->body_len] = '\0';
    struct wire_in r = {strings, strings + head->len, false};
    req->slot = wire_get_u32(&r);
    req->call_depth = wire_get_u32(&r);
    req->received_ns = wire_get_u64(&r);
    req->enqueued_ns = wire_get_u64(&r);
    req->dispatched_ns = wire_get_u64(&r);
    req->batch_size = wire_get_u32(&r);
    req->method = wire_get_str(&r);
    req->path = wire_get_str(&r);
    req->id = wire_get_str(&r);
    for (uint32_t i = 0; i < 2 * p->count; i++) headers[i] = wire_get_str(&r);
    req->headers = headers;
    req->header_count = p->count;
    uint32_t queries = wire_get_u32(&r);
    if (queries && !r.bad) {
        req->query = calloc(2 * (size_t)queries, sizeof *req->query);
        if (!req->query) abort();
        for (uint32_t i = 0; i < 2 * queries; i++) req->query[i] = strdup(wire_get_str(&r));
        req->query_count = queries;
    }
    req->body = body;
    req->body_len = p->body_len;
    return req;
}

/* After handle_batch: whether the plugin asked for another step at once
 * (serve_replica_continue); the first time, the server is told, so that
 * the replica's open streams count against its max batch size. */
static bool again, told_continuous;
static void send_reply(uint32_t type, const char *text, uint32_t value);

static void note_continuous(void)
{
    again = host.context.again;
    host.context.again = false;
    if (!again || told_continuous) return;
    told_continuous = true;
    send_reply(MSG_CONTINUOUS, "", 0);
}

static void run_batch(serve_request **batch, size_t n, bool report)
{
    uint64_t started = serve__now_ns();
    atomic_store(&host.ch.shared->batch_started_ns, started);
    for (size_t i = 0; i < n; i++) {
        request_ref(batch[i]); /* the batch's, as a thread replica's worker holds */
        batch[i]->in_batch = true;
    }
    host.context.in_batch = true;
    /* A replica that declared inputs sees only requests that decode. */
    serve_request **given = batch;
    size_t given_n = n;
    if (host.context.decls.inputs && n) {
        if (n > host.admitted_cap) {
            serve_request **grown = realloc(host.admitted, n * sizeof *grown);
            if (!grown) abort();
            host.admitted = grown;
            host.admitted_cap = n;
        }
        given = host.admitted;
        given_n = tensor_admit(batch, n, given);
    }
    int rc = given_n || !report || told_continuous
                 ? host.lib.plugin->handle_batch(host.state, given_n ? given : NULL, given_n)
                 : 0;
    host.context.in_batch = false;
    uint64_t took = serve__now_ns() - started;
    atomic_store(&host.ch.shared->batch_started_ns, 0);
    note_continuous();
    if (!report) { /* a step of continuous batching, not a batch the server sent */
        if (rc != 0) log_batch_failed(&host.batch_failures, host.backend, host.index, rc, n);
        if (n == 0) return;
    }
    if (rc != 0 && report) log_batch_failed(&host.batch_failures, host.backend, host.index, rc, n);

    /* The answers given during the batch as one write (one wake-up). */
    shm_ring_lock(&host.answers);
    for (size_t i = 0; i < n; i++) {
        serve_request *req = batch[i];
        req->in_batch = false;
        if (req->deferred) continue;
        if (!req->answered) {
            req->answered = true;
            char msg[256];
            if (rc != 0) {
                snprintf(msg, sizeof msg, "backend %s: plugin failed on this batch (code %d)",
                         host.backend, rc);
            } else {
                report_bug(req, "returned without answering a request");
                snprintf(msg, sizeof msg, "backend %s: plugin returned without answering",
                         host.backend);
            }
            request_answer_runtime(req, 500, msg);
        }
        put_answer(req);
    }
    if (report) {
        struct wire_out *w = &host.out;
        wire_reset(w);
        wire_u32(w, (uint32_t)n);
        wire_u64(w, took);
        channel_put(&host.answers, MSG_BATCH_DONE, w, 0, NULL, 0);
    }
    shm_ring_end_message(&host.answers);
    shm_ring_unlock(&host.answers);
    for (size_t i = 0; i < n; i++) {
        if (!batch[i]->deferred) request_release(batch[i]); /* the host's */
        request_release(batch[i]);                          /* the batch's */
    }
}

static serve_config *read_config(struct wire_in *r, uint32_t pairs)
{
    serve_config *c = config_new();
    if (!c) abort();
    for (uint32_t i = 0; i < pairs; i++) {
        const char *k = wire_get_str(r);
        const char *v = wire_get_str(r);
        const char *base = wire_get_str(r);
        config_set_at(c, k, v, base);
    }
    return c;
}

static void send_reply(uint32_t type, const char *text, uint32_t value)
{
    shm_ring_lock(&host.answers);
    struct wire_out *w = &host.out;
    wire_reset(w);
    wire_str(w, text);
    wire_u32(w, value);
    channel_put(&host.answers, type, w, 0, NULL, 0);
    shm_ring_end_message(&host.answers);
    shm_ring_unlock(&host.answers);
}

/* MSG_INIT: load the plugin and run its init. */
static bool start(const struct wire_out *head, uint32_t pairs)
{
    struct wire_in r = wire_in_of(head);
    host.backend = strdup(wire_get_str(&r));
    const char *plugin = wire_get_str(&r);
    const char *file = wire_get_str(&r); /* what to load: the server's copy of plugin */
    host.index = (int)wire_get_u32(&r);
    uint32_t replicas = wire_get_u32(&r);
    host.max_batch = wire_get_u32(&r);
    stream_set_bound((size_t)wire_get_u64(&r)); /* the server's --stream-buffer */
    serve_config *config = read_config(&r, pairs);
    crash_report_set_context(host.backend, host.index);
    char err[1024];
    if (r.bad) {
        send_reply(MSG_INIT_FAILED, "malformed start message", 0);
        config_free(config);
        return false;
    }
    if (!plugin_load(file, plugin, &host.lib, err, sizeof err)) {
        send_reply(MSG_INIT_FAILED, err, 0);
        config_free(config);
        return false;
    }
    host.loaded = true;
    host.context.backend_name = host.backend;
    host.context.index = host.index;
    host.context.metrics = metrics_backend(host.backend);
    const serve_plugin *p = host.lib.plugin;
    config_error_clear();
    host.context.in_init = true;
    int rc = p->init ? p->init(&host.context, config, &host.state) : 0;
    host.context.in_init = false;
    if (rc != 0) {
        const char *why = host.context.failure[0]    ? host.context.failure
                          : serve_config_error()[0] ? serve_config_error()
                                                  : "no reason given";
        LOG_ERROR("backend=%s replica=%d: init failed: %s", host.backend, host.index, why);
        replica_init_error(err, sizeof err, plugin, host.index, replicas, why);
        send_reply(MSG_INIT_FAILED, err, 0);
        config_free(config);
        return false;
    }
    config_free(config);
    /* READY: the plugin's name, whether it reconfigures, and the tensors
     * it declared (OIP model metadata; "" for none). */
    char *metadata = host.context.decls.count ? tensor_decls_json(&host.context.decls) : NULL;
    shm_ring_lock(&host.answers);
    struct wire_out *w = &host.out;
    wire_reset(w);
    wire_str(w, p->name ? p->name : "?");
    wire_u32(w, p->reconfigure != NULL);
    wire_str(w, metadata ? metadata : "");
    channel_put(&host.answers, MSG_READY, w, 0, NULL, 0);
    shm_ring_end_message(&host.answers);
    shm_ring_unlock(&host.answers);
    free(metadata);
    return true;
}

/* Continuous batching: what the server handed over beyond the max batch
 * size less the open streams (before it knew the plugin steps, or while
 * streams of a batch it counted as done were still open) waits here, and
 * joins the steps as streams end. Held only while the plugin keeps
 * stepping: one that stops gets it at once rather than never. */
static struct {
    serve_request **reqs;
    size_t head, count, cap;
} backlog;

static bool backlog_push(serve_request *req)
{
    if (backlog.count == backlog.cap) {
        size_t cap = backlog.cap ? 2 * backlog.cap : 64;
        serve_request **grown = malloc(cap * sizeof *grown);
        if (!grown) return false;
        for (size_t i = 0; i < backlog.count; i++)
            grown[i] = backlog.reqs[(backlog.head + i) % backlog.cap];
        free(backlog.reqs);
        backlog.reqs = grown;
        backlog.head = 0;
        backlog.cap = cap;
    }
    backlog.reqs[(backlog.head + backlog.count++) % backlog.cap] = req;
    return true;
}

/* How many more requests the plugin may hold now. */
static size_t room(void)
{
    if (!told_continuous || !again) return SIZE_MAX;
    pthread_mutex_lock(&host.calls_lock);
    uint32_t open = host.deferred_count;
    pthread_mutex_unlock(&host.calls_lock);
    return open < host.max_batch ? host.max_batch - open : 0;
}

/* One step: what fits of the backlog (maybe nothing). */
static void step_from_backlog(serve_request **scratch)
{
    size_t fit = room(), n = 0;
    while (n < fit && n < host.max_batch && backlog.count) {
        scratch[n++] = backlog.reqs[backlog.head];
        backlog.head = (backlog.head + 1) % backlog.cap;
        backlog.count--;
    }
    run_batch(n ? scratch : NULL, n, false);
}

/* A batch the server sent: what fits runs now (reported as the batch),
 * the rest waits in the backlog, behind what waits there already. */
static void run_sent_batch(serve_request **batch, size_t n)
{
    size_t fit = backlog.count ? 0 : room();
    if (fit >= n) {
        run_batch(batch, n, true);
        return;
    }
    for (size_t i = fit; i < n; i++)
        if (!backlog_push(batch[i])) abort();
    run_batch(batch, fit, true);
}

static void serve_work(void)
{
    struct wire_out head = {0};
    size_t cap = 0, n = 0;
    serve_request **batch = NULL;
    serve_request **scratch = malloc((host.max_batch ? host.max_batch : 1) * sizeof *scratch);
    if (!scratch) abort();
    for (;;) {
        uint32_t type;
        struct wire_prefix prefix;
        if ((again || backlog.count) && shm_ring_readable(&host.work) == 0) {
            step_from_backlog(scratch); /* the next step, with what waits */
            continue;
        }
        if (!channel_get(&host.work, shm_ring_wait_futex, NULL, &type, &prefix, &head)) break;
        if (type == MSG_REQUEST) {
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                serve_request **grown = realloc(batch, cap * sizeof *grown);
                if (!grown) abort();
                batch = grown;
            }
            batch[n++] = read_request(&head, &prefix);
            continue;
        }
        channel_skip(&host.work, prefix.body_len, shm_ring_wait_futex, NULL);
        if (type == MSG_RUN_BATCH) {
            if (n) run_sent_batch(batch, n);
            n = 0;
        } else if (type == MSG_RECONFIGURE) {
            struct wire_in r = wire_in_of(&head);
            serve_config *config = read_config(&r, prefix.count);
            config_error_clear();
            int rc = host.lib.plugin->reconfigure ? host.lib.plugin->reconfigure(host.state, config)
                                                  : -1;
            config_free(config);
            /* A typed getter's refusal is the reason the user reads. */
            send_reply(MSG_RECONFIGURED, rc ? serve_config_error() : "", (uint32_t)rc);
        } else if (type == MSG_STOP) {
            /* Open generations finish first, within their time. */
            uint64_t until = serve__now_ns() + REPLICA_STOP_STEPS_MS * 1000000ull;
            while ((again || backlog.count) && serve__now_ns() < until) step_from_backlog(scratch);
            break;
        }
    }
    free(batch);
    free(scratch);
    wire_free(&head);
}

int replica_host_main(int argc, char **argv)
{
    if (argc != 5 && argc != 7) { /* backend=NAME replica=N may follow, for ps */
        fprintf(stderr, "serve: __replica-host is started by the server, not by hand\n");
        return 2;
    }
    pid_t parent = (pid_t)strtol(argv[4], NULL, 10);
    /* Dies with the server thread that spawned it; if that already
     * happened, the parent is someone else now. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) return 1;
    signal(SIGPIPE, SIG_IGN);
    crash_report_install();
    int memfd = (int)strtol(argv[2], NULL, 10);
    int wake_fd = (int)strtol(argv[3], NULL, 10);
    if (!replica_channel_attach(&host.ch, memfd)) {
        fprintf(stderr, "serve: replica host: cannot map its channel: %s\n", strerror(errno));
        return 1;
    }
    shm_ring_end_init(&host.work, host.ch.work, -1, NULL, NULL);
    shm_ring_end_init(&host.results, host.ch.results, -1, NULL, NULL);
    shm_ring_end_init(&host.answers, host.ch.answers, wake_fd, NULL, NULL);
    request_set_host(&request_host);
    handles_set_forwarder(forward_call);

    struct wire_out head = {0};
    uint32_t type;
    struct wire_prefix prefix;
    bool ok = channel_get(&host.work, shm_ring_wait_futex, NULL, &type, &prefix, &head) &&
              type == MSG_INIT && start(&head, prefix.count);
    wire_free(&head);
    if (ok) {
        pthread_t results;
        if (pthread_create(&results, NULL, results_main, NULL) != 0) abort();
        pthread_detach(results);
        serve_work();
        pthread_mutex_lock(&host.results_lock);
        host.stopping = true;
        pthread_mutex_unlock(&host.results_lock);
        if (host.lib.plugin->destroy) host.lib.plugin->destroy(host.state);
        replica_free_handles(&host.context);
        /* Deferred requests the plugin never answered: the server answers
         * them (503); their memory here goes. */
        pthread_mutex_lock(&host.calls_lock);
        while (host.deferred) {
            serve_request *req = host.deferred;
            forget_deferred(req);
            request_release(req);
        }
        pthread_mutex_unlock(&host.calls_lock);
    }
    /* The plugin stays loaded: a thread it started may still run its code
     * until exit. */
    shm_ring_lock(&host.answers); /* after the last answer a plugin thread wrote */
    wire_free(&host.out);
    shm_ring_unlock(&host.answers);
    free(host.backend);
    return ok ? 0 : 1;
}
