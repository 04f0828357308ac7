/* A plugin whose init fails with a reason; with config fail_replica=N only
 * replica N fails. */
#include <serve/plugin.h>
#include <stdlib.h>

static int init_fail_init(serve_replica *replica, const serve_config *config, void **state)
{
    (void)state;
    const char *which = serve_config_get(config, "fail_replica");
    if (which && atoi(which) != serve_replica_index(replica)) return 0;
    serve_replica_fail(replica, "model file %s is missing",
                       serve_config_get(config, "model") ? serve_config_get(config, "model")
                                                         : "/nonexistent/model.pt");
    return -1;
}

static int init_fail_batch(void *state, serve_request *const *requests, size_t n)
{
    (void)state;
    for (size_t i = 0; i < n; i++) serve_respond(requests[i], 200, "text/plain", "up", 2);
    return 0;
}

static const serve_plugin plugin = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "init_fail",
    .init = init_fail_init,
    .handle_batch = init_fail_batch,
};

SERVE_PLUGIN_DEFINE(plugin)
