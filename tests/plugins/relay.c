/* relay - calls the endpoint named by the request's "to" query parameter
 * with the request's body and answers with the target's status, content
 * type and body, so tests see exactly what a caller gets.
 *   ?to=E            callback style (the request is deferred)
 *   ?to=E&future=1   future style: waits in handle_batch
 *   &key=K           the call's shard key
 *   &forward=1       pass ?to= and &forward= on, so that ?to=SELF recurses
 *   &stream=1        stream the target's answer through, piece by piece
 *   &cancel_ms=MS    MS ms after sending, cancel the call
 *                    (serve_request_cancel_calls); its 499 is the answer
 * Other query parameters are passed on to the target. */
#include <pthread.h>
#include <serve/plugin.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

struct relay {
    serve_replica *replica;
};

static void pass_on(serve_request *outer, const serve_result *r)
{
    size_t len;
    const void *body = serve_result_body(r, &len);
    const char *mark = serve_result_header(r, "X-Mark");
    if (mark) serve_response_add_header(outer, "X-Mark", mark);
    serve_respond(outer, serve_result_status(r), serve_result_content_type(r), body, len);
}

static void on_answer(const serve_result *r, void *arg) { pass_on(arg, r); }

/* Streamed through: the pieces as they come, then the end. */
static void on_piece(const void *data, size_t len, void *arg)
{
    serve_stream_write(arg, data, len);
}

static void on_stream_end(const serve_result *r, void *arg)
{
    if (serve_result_status(r) >= 400)
        serve_stream_fail(arg, "relay: the target's stream failed");
    else
        serve_stream_end(arg);
}

/* cancel_ms: the outer request is answered by this thread alone, so that
 * it is still valid when the call is cancelled: the call's callback only
 * hands its result over. */
struct canceller {
    serve_request *req;
    long ms;
    pthread_mutex_t lock;
    pthread_cond_t done;
    int status;       /* 0 until the call's result came */
    char *ctype, *body;
    size_t len;
};

static void on_cancellable(const serve_result *r, void *arg)
{
    struct canceller *c = arg;
    size_t len;
    const void *body = serve_result_body(r, &len);
    pthread_mutex_lock(&c->lock);
    c->body = malloc(len + 1);
    if (c->body) memcpy(c->body, body, len);
    c->len = c->body ? len : 0;
    c->ctype = strdup(serve_result_content_type(r) ? serve_result_content_type(r) : "");
    c->status = serve_result_status(r);
    pthread_cond_signal(&c->done);
    pthread_mutex_unlock(&c->lock);
}

static void *cancel_later(void *arg)
{
    struct canceller *c = arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += c->ms / 1000;
    until.tv_nsec += (c->ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->lock);
    while (!c->status && pthread_cond_timedwait(&c->done, &c->lock, &until) == 0) {
    }
    int answered = c->status;
    pthread_mutex_unlock(&c->lock);
    if (!answered) serve_request_cancel_calls(c->req); /* its callback gets 499 */
    pthread_mutex_lock(&c->lock);
    while (!c->status) pthread_cond_wait(&c->done, &c->lock);
    pthread_mutex_unlock(&c->lock);
    serve_respond(c->req, c->status, c->ctype, c->body, c->len);
    free(c->ctype);
    free(c->body);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->done);
    free(c);
    return NULL;
}

static int pass_query(const char *key)
{
    return strcmp(key, "to") && strcmp(key, "stream") && strcmp(key, "cancel_ms") &&
           strcmp(key, "future") && strcmp(key, "key") && strcmp(key, "forward");
}

static int relay_init(serve_replica *replica, const serve_config *config, void **state)
{
    (void)config;
    struct relay *r = calloc(1, sizeof *r);
    if (!r) return -1;
    r->replica = replica;
    *state = r;
    return 0;
}

static int relay_batch(void *state, serve_request *const *requests, size_t n)
{
    struct relay *relay = state;
    for (size_t i = 0; i < n; i++) {
        serve_request *req = requests[i];
        const char *to = serve_request_query(req, "to");
        if (!to) {
            serve_respond_error(req, 400, "relay: ?to=ENDPOINT is required");
            continue;
        }
        serve_call *call = serve_call_new(serve_replica_handle(relay->replica, to), req);
        size_t len;
        const void *body = serve_request_body(req, &len);
        serve_call_set_body(call, body, len);
        serve_call_add_header(call, "X-Relayed-By", "relay");
        if (serve_request_query(req, "key")) serve_call_set_shard_key(call, serve_request_query(req, "key"));
        if (serve_request_query(req, "forward")) {
            serve_call_add_query(call, "to", to);
            serve_call_add_query(call, "forward", "1");
        }
        static const char *const passed[] = {"n", "stats"};
        for (size_t k = 0; k < sizeof passed / sizeof *passed; k++)
            if (pass_query(passed[k]) && serve_request_query(req, passed[k]))
                serve_call_add_query(call, passed[k], serve_request_query(req, passed[k]));
        if (serve_request_query(req, "stream")) {
            if (serve_stream_begin(req, 200, "text/event-stream") != SERVE_OK) {
                serve_call_send(call, NULL, NULL); /* the client has gone: nothing to relay */
                continue;
            }
            serve_call_on_chunk(call, on_piece);
            serve_call_send(call, on_stream_end, req);
        } else if (serve_request_query(req, "future")) {
            serve_future *f = serve_call_send_future(call);
            pass_on(req, serve_future_wait(f));
            serve_future_free(f);
        } else {
            serve_request_defer(req);
            const char *cancel_ms = serve_request_query(req, "cancel_ms");
            if (cancel_ms) {
                struct canceller *c = calloc(1, sizeof *c);
                c->req = req;
                c->ms = atol(cancel_ms);
                pthread_mutex_init(&c->lock, NULL);
                pthread_cond_init(&c->done, NULL);
                serve_call_send(call, on_cancellable, c);
                pthread_t t;
                pthread_create(&t, NULL, cancel_later, c);
                pthread_detach(t);
            } else {
                serve_call_send(call, on_answer, req);
            }
        }
    }
    return 0;
}

static void relay_destroy(void *state) { free(state); }

static const serve_plugin relay = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "relay",
    .init = relay_init,
    .handle_batch = relay_batch,
    .destroy = relay_destroy,
};

SERVE_PLUGIN_DEFINE(relay)
