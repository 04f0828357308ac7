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

struct canceller {
    serve_request *req;
    long ms;
};

static void *cancel_later(void *arg)
{
    struct canceller *c = arg;
    struct timespec ts = {c->ms / 1000, (c->ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    serve_request_cancel_calls(c->req);
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
            serve_stream_begin(req, 200, "text/event-stream");
            serve_call_on_chunk(call, on_piece);
            serve_call_send(call, on_stream_end, req);
        } else if (serve_request_query(req, "future")) {
            serve_future *f = serve_call_send_future(call);
            pass_on(req, serve_future_wait(f));
            serve_future_free(f);
        } else {
            serve_request_defer(req);
            const char *cancel_ms = serve_request_query(req, "cancel_ms");
            serve_call_send(call, on_answer, req);
            if (cancel_ms) {
                struct canceller *c = malloc(sizeof *c);
                c->req = req;
                c->ms = atol(cancel_ms);
                pthread_t t;
                pthread_create(&t, NULL, cancel_later, c);
                pthread_detach(t);
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
