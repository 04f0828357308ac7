/* typed - reads one config key of each typed getter at init and answers
 * every request with what it read, as JSON. A value the getter refuses
 * fails init with the getter's own reason (no serve_replica_fail). */
#include <inttypes.h>
#include <serve/plugin.h>
#include <stdio.h>
#include <stdlib.h>

struct typed {
    int64_t i;
    double n;
    int b;
    uint64_t s;
    char p[1024];
};

static int typed_init(serve_replica *replica, const serve_config *config, void **state)
{
    (void)replica;
    struct typed *t = calloc(1, sizeof *t);
    if (!t) return -1;
    if (serve_config_int(config, "int", -1, &t->i) != SERVE_OK ||
        serve_config_number(config, "number", 0.5, &t->n) != SERVE_OK ||
        serve_config_bool(config, "bool", 1, &t->b) != SERVE_OK ||
        serve_config_size(config, "size", 1024, &t->s) != SERVE_OK ||
        serve_config_path(config, "path", "default.txt", t->p, sizeof t->p) != SERVE_OK) {
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

static int typed_batch(void *state, serve_request *const *requests, size_t n)
{
    const struct typed *t = state;
    char out[1400];
    int len = snprintf(out, sizeof out,
                       "{\"int\": %" PRId64 ", \"number\": %g, \"bool\": %s, \"size\": %" PRIu64
                       ", \"path\": \"%s\"}",
                       t->i, t->n, t->b ? "true" : "false", t->s, t->p);
    for (size_t i = 0; i < n; i++) serve_respond(requests[i], 200, "application/json", out, (size_t)len);
    return 0;
}

static void typed_destroy(void *state) { free(state); }

static const serve_plugin typed_plugin = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "typed",
    .init = typed_init,
    .handle_batch = typed_batch,
    .destroy = typed_destroy,
};

SERVE_PLUGIN_DEFINE(typed_plugin)
