/* counter - the batching example: a count per replica. Each request adds
 * one (or `step`) and is answered with the new value, so N requests to one
 * replica get exactly 1..N whatever batches they arrive in.
 *
 * Config: start=N, the value before the first request (default 0; read at
 * init only); step=N, what each request adds (default 1). A new step reaches
 * running replicas through reconfigure, and the count goes on from where it
 * was. */
#include <serve/plugin.h>
#include <stdio.h>
#include <stdlib.h>

struct counter {
    long long count; /* only the replica's worker thread touches it */
    long long step;
};

static int read_step(const serve_config *config, long long *step)
{
    int64_t v;
    if (serve_config_int(config, "step", 1, &v) != SERVE_OK) return -1;
    *step = (long long)v;
    return 0;
}

static int counter_init(serve_replica *replica, const serve_config *config, void **state)
{
    struct counter *c = calloc(1, sizeof *c);
    if (!c) {
        serve_replica_fail(replica, "out of memory");
        return -1;
    }
    /* A refused value is init's reason: "config start=x: not an integer". */
    int64_t start;
    if (serve_config_int(config, "start", 0, &start) != SERVE_OK ||
        read_step(config, &c->step) != 0) {
        free(c);
        return -1;
    }
    c->count = (long long)start;
    *state = c;
    return 0;
}

static int counter_reconfigure(void *state, const serve_config *config)
{
    struct counter *c = state;
    long long step;
    if (read_step(config, &step) != 0) return -1;
    c->step = step; /* runs between batches: no handle_batch is using it */
    return 0;
}

static int counter_handle_batch(void *state, serve_request *const *requests, size_t n)
{
    struct counter *c = state;
    for (size_t i = 0; i < n; i++) {
        char body[32];
        c->count += c->step;
        int len = snprintf(body, sizeof body, "%lld", c->count);
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
    .reconfigure = counter_reconfigure,
    .destroy = counter_destroy,
};

SERVE_PLUGIN_DEFINE(counter_plugin)
