/* relay - calls the endpoint named by the request's "to" query parameter
 * with the request's body and answers with the target's status, content
 * type and body, so tests see exactly what a caller gets.
 *   ?to=E            callback style (the request is deferred)
 *   ?to=E&future=1   future style: waits in handle_batch
 *   &key=K           the call's shard key
 *   &forward=1       pass ?to= and &forward= on, so that ?to=SELF recurses */
#include <serve/plugin.h>
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
        if (serve_request_query(req, "future")) {
            serve_future *f = serve_call_send_future(call);
            pass_on(req, serve_future_wait(f));
            serve_future_free(f);
        } else {
            serve_request_defer(req);
            serve_call_send(call, on_answer, req);
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
