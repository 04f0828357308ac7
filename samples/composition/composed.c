/* composed - a conditional pipeline over two models, through handles.
 *
 * For each request: call model_one with the request's data; when its score
 * is above 0.5, also call model_two; answer {"model_used": 2, "score": S} or
 * {"model_used": 1, "score": S}.
 *
 * Nothing here blocks: the request is deferred, each call completes through
 * a callback, and the last callback answers. The worker thread goes back to
 * the next batch at once, so max_concurrent_queries requests can wait on
 * their calls at the same time.
 *
 * Config: first=ENDPOINT (default model_one), second=ENDPOINT (default
 * model_two). */
#include <serve/plugin.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct composed {
    serve_handle *first;
    serve_handle *second;
};

struct pending {
    serve_request *outer; /* deferred; valid until answered */
    serve_handle *second;
    double score;
};

static void answer(struct pending *p, int model_used)
{
    char body[96];
    int len = snprintf(body, sizeof body, "{\"model_used\": %d, \"score\": %.6f}", model_used,
                       p->score);
    serve_respond(p->outer, 200, "application/json", body, (size_t)len);
    free(p);
}

/* A target's error becomes the outer request's error, with its message. */
static int pass_error(struct pending *p, const serve_result *r)
{
    int status = serve_result_status(r);
    if (status >= 200 && status < 300) return 0;
    size_t len;
    const void *body = serve_result_body(r, &len);
    serve_respond(p->outer, status, serve_result_content_type(r), body, len);
    free(p);
    return -1;
}

static void on_second(const serve_result *r, void *arg)
{
    struct pending *p = arg;
    if (pass_error(p, r) == 0) answer(p, 2);
}

static bool read_score(const serve_result *r, double *score)
{
    size_t len;
    const char *body = serve_result_body(r, &len);
    char text[128];
    snprintf(text, sizeof text, "%.*s", (int)(len < sizeof text - 1 ? len : sizeof text - 1), body);
    const char *key = strstr(text, "\"score\"");
    const char *colon = key ? strchr(key, ':') : NULL;
    if (!colon) return false;
    char *end;
    *score = strtod(colon + 1, &end);
    return end != colon + 1;
}

static void on_first(const serve_result *r, void *arg)
{
    struct pending *p = arg;
    if (pass_error(p, r) != 0) return;
    if (!read_score(r, &p->score)) {
        serve_respond_error(p->outer, 502, "composed: model_one's answer has no score");
        free(p);
        return;
    }
    if (p->score <= 0.5) {
        answer(p, 1);
        return;
    }
    serve_call *call = serve_call_new(p->second, p->outer);
    size_t len;
    const void *data = serve_request_body(p->outer, &len);
    if (!call || serve_call_set_body(call, data, len) != SERVE_OK) {
        if (call) serve_call_send(call, NULL, NULL); /* frees it */
        serve_respond_error(p->outer, 500, "composed: out of memory");
        free(p);
        return;
    }
    serve_call_send(call, on_second, p);
}

static int composed_init(serve_replica *replica, const serve_config *config, void **state)
{
    struct composed *c = calloc(1, sizeof *c);
    const char *first = serve_config_get(config, "first");
    const char *second = serve_config_get(config, "second");
    if (c) {
        c->first = serve_replica_handle(replica, first ? first : "model_one");
        c->second = serve_replica_handle(replica, second ? second : "model_two");
    }
    if (!c || !c->first || !c->second) {
        free(c);
        serve_replica_fail(replica, "out of memory");
        return -1;
    }
    *state = c;
    return 0;
}

static int composed_batch(void *state, serve_request *const *requests, size_t n)
{
    struct composed *c = state;
    for (size_t i = 0; i < n; i++) {
        serve_request *req = requests[i];
        struct pending *p = calloc(1, sizeof *p);
        serve_call *call = p ? serve_call_new(c->first, req) : NULL;
        size_t len;
        const void *data = serve_request_body(req, &len);
        if (!call || serve_call_set_body(call, data, len) != SERVE_OK) {
            if (call) serve_call_send(call, NULL, NULL);
            free(p);
            serve_respond_error(req, 500, "composed: out of memory");
            continue;
        }
        p->outer = req;
        p->second = c->second;
        serve_request_defer(req);
        serve_call_send(call, on_first, p);
    }
    return 0;
}

static void composed_destroy(void *state) { free(state); }

static const serve_plugin composed = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "composed",
    .init = composed_init,
    .handle_batch = composed_batch,
    .destroy = composed_destroy,
};

SERVE_PLUGIN_DEFINE(composed)
