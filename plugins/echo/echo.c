/* echo - answers each request with its own body and content type.
 * The smallest useful plugin: no state, no config, no init. */
#include <serve/plugin.h>

static int echo_handle_batch(void *state, serve_request *const *requests, size_t n)
{
    (void)state;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const void *body = serve_request_body(requests[i], &len);
        const char *type = serve_request_header(requests[i], "Content-Type");
        serve_respond(requests[i], 200, type ? type : "application/octet-stream", body, len);
    }
    return 0;
}

static const serve_plugin echo_plugin = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "echo",
    .handle_batch = echo_handle_batch,
};

SERVE_PLUGIN_DEFINE(echo_plugin)
