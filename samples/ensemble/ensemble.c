/* ensemble - fans one request out to several member endpoints in parallel
 * and averages their scores. Its latency is about the slowest member's,
 * not the sum: every call is sent before any answer is awaited.
 *
 * Config: members=E1,E2,... (required), repeat=N calls to each member
 * (default 1). A member's score is the number in its JSON answer's "score"
 * field, or its whole body when that is a number. The answer:
 *   {"members": M, "answered": A, "mean": X}   (mean is null when A is 0)
 * A member that fails does not fail the ensemble; it is left out of A. */
#include <pthread.h>
#include <serve/plugin.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MEMBERS 256

struct ensemble {
    serve_handle *members[MAX_MEMBERS];
    size_t count;
    int repeat;
};

struct gather {
    serve_request *outer;
    pthread_mutex_t mutex; /* callbacks arrive on several threads */
    size_t waiting;
    size_t calls;
    size_t answered;
    double sum;
};

static bool score_of(const serve_result *r, double *score)
{
    size_t len;
    const char *body = serve_result_body(r, &len);
    char text[256];
    snprintf(text, sizeof text, "%.*s", (int)(len < sizeof text - 1 ? len : sizeof text - 1), body);
    const char *key = strstr(text, "\"score\"");
    const char *start = key ? strchr(key, ':') + 1 : text;
    char *end;
    *score = strtod(start, &end);
    return end != start;
}

/* Counts one call (or the sender's own count) done; the last one answers. */
static void done_one(struct gather *g, bool ok, double score)
{
    pthread_mutex_lock(&g->mutex);
    if (ok) {
        g->sum += score;
        g->answered++;
    }
    bool last = --g->waiting == 0;
    pthread_mutex_unlock(&g->mutex);
    if (!last) return;
    char body[128];
    int len = g->answered
                  ? snprintf(body, sizeof body, "{\"members\": %zu, \"answered\": %zu, \"mean\": %.6f}",
                             g->calls, g->answered, g->sum / (double)g->answered)
                  : snprintf(body, sizeof body, "{\"members\": %zu, \"answered\": 0, \"mean\": null}",
                             g->calls);
    serve_respond(g->outer, 200, "application/json", body, (size_t)len);
    pthread_mutex_destroy(&g->mutex);
    free(g);
}

static void on_member(const serve_result *r, void *arg)
{
    double score = 0;
    bool ok = serve_result_status(r) / 100 == 2 && score_of(r, &score);
    done_one(arg, ok, score);
}

static int ensemble_init(serve_replica *replica, const serve_config *config, void **state)
{
    const char *members = serve_config_get(config, "members");
    int64_t repeat;
    if (serve_config_int(config, "repeat", 1, &repeat) != SERVE_OK) return -1; /* its reason */
    if (!members || !*members) {
        serve_replica_fail(replica, "config members=E1,E2,... is required");
        return -1;
    }
    struct ensemble *e = calloc(1, sizeof *e);
    char *list = strdup(members), *save = NULL;
    if (!e || !list) {
        free(e);
        free(list);
        serve_replica_fail(replica, "out of memory");
        return -1;
    }
    e->repeat = repeat >= 1 && repeat <= 1024 ? (int)repeat : 0;
    for (char *m = strtok_r(list, ",", &save); m && e->count < MAX_MEMBERS;
         m = strtok_r(NULL, ",", &save))
        e->members[e->count++] = serve_replica_handle(replica, m);
    free(list);
    if (e->repeat < 1 || e->repeat > 1024 || e->count == 0) {
        free(e);
        serve_replica_fail(replica, "config repeat must be 1..1024 and members non-empty");
        return -1;
    }
    *state = e;
    return 0;
}

static int ensemble_batch(void *state, serve_request *const *requests, size_t n)
{
    struct ensemble *e = state;
    for (size_t i = 0; i < n; i++) {
        serve_request *req = requests[i];
        struct gather *g = calloc(1, sizeof *g);
        if (!g) {
            serve_respond_error(req, 500, "ensemble: out of memory");
            continue;
        }
        pthread_mutex_init(&g->mutex, NULL);
        g->outer = req;
        g->calls = e->count * (size_t)e->repeat;
        /* One extra count held until every call is sent, so an answer that
         * comes back at once cannot finish the gather early. */
        g->waiting = g->calls + 1;
        serve_request_defer(req);
        size_t len;
        const void *data = serve_request_body(req, &len);
        for (size_t m = 0; m < g->calls; m++) {
            serve_call *call = serve_call_new(e->members[m % e->count], req);
            if (!call || serve_call_set_body(call, data, len) != SERVE_OK) {
                if (call) serve_call_send(call, NULL, NULL); /* frees it */
                done_one(g, false, 0);                       /* it never went out */
                continue;
            }
            serve_call_send(call, on_member, g);
        }
        done_one(g, false, 0); /* the sender's own count */
    }
    return 0;
}

static void ensemble_destroy(void *state) { free(state); }

static const serve_plugin ensemble = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "ensemble",
    .init = ensemble_init,
    .handle_batch = ensemble_batch,
    .destroy = ensemble_destroy,
};

SERVE_PLUGIN_DEFINE(ensemble)
