/* model_two - the second model of the composition example: answers with
 * the data it got. */
#include <serve/plugin.h>

static int model_two_batch(void *state, serve_request *const *requests, size_t n)
{
    (void)state;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const void *data = serve_request_body(requests[i], &len);
        serve_respond(requests[i], 200, "application/octet-stream", data, len);
    }
    return 0;
}

static const serve_plugin model_two = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "model_two",
    .handle_batch = model_two_batch,
};

SERVE_PLUGIN_DEFINE(model_two)
