/* A plugin built against a newer header: it calls a serve_* function this
 * server does not have, so loading it must say the server is too old. */
#include <serve/plugin.h>

int serve_request_tensor_count(const serve_request *req); /* not in this SDK */

static int batch(void *state, serve_request *const *reqs, size_t n)
{
    (void)state;
    for (size_t i = 0; i < n; i++)
        serve_respond(reqs[i], 200, "text/plain", "x", (size_t)serve_request_tensor_count(reqs[i]));
    return 0;
}

static const serve_plugin plugin = {
    .abi_version = SERVE_ABI_VERSION, .name = "newer_sdk", .handle_batch = batch,
};

SERVE_PLUGIN_DEFINE(plugin)
