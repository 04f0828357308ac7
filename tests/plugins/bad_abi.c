/* A plugin built for an ABI version the server does not speak. Its
 * handle_batch must never run: the loader refuses it first. */
#include <serve/plugin.h>
#include <stdlib.h>

static int never(void *state, serve_request *const *requests, size_t n)
{
    (void)state, (void)requests, (void)n;
    abort();
}

static const serve_plugin plugin = {
    .abi_version = 99,
    .name = "bad_abi",
    .handle_batch = never,
};

SERVE_PLUGIN_DEFINE(plugin)
