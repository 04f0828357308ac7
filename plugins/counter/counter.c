/* counter - the batching example: a count per replica. Each request adds
 * one and is answered with the new value, so N requests to one replica get
 * exactly 1..N whatever batches they arrive in.
 *
 * Config: start=N, the value before the first request (default 0). */
#include <serve/plugin.h>
#include <stdio.h>
#include <stdlib.h>

struct counter {
    long long count; /* only the replica's worker thread touches it */
};

static int counter_init(serve_replica *replica, const serve_config *config, void **state)
{
    struct counter *c = calloc(1, sizeof *c);
    if (!c) {
        serve_replica_fail(replica, "out of memory");
        return -1;
    }
    const char *start = serve_config_get(config, "start");
    if (start) {
        char *end;
        c->count = strtoll(start, &end, 10);
        if (*start == '\0' || *end != '\0') {
            serve_replica_fail(replica, "config start=%s is not an integer", start);
            free(c);
            return -1;
        }
    }
    *state = c;
    return 0;
}

static int counter_handle_batch(void *state, serve_request *const *requests, size_t n)
{
    struct counter *c = state;
    for (size_t i = 0; i < n; i++) {
        char body[32];
        int len = snprintf(body, sizeof body, "%lld", ++c->count);
        serve_respond(requests[i], 200, "text/plain", body, (size_t)len);
    }
    return 0;
}

static void counter_destroy(void *state) { free(state); }

static const serve_plugin counter_plugin = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "counter",
    .init = counter_init,
    .handle_batch = counter_handle_batch,
    .destroy = counter_destroy,
};

SERVE_PLUGIN_DEFINE(counter_plugin)
