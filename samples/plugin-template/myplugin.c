/* myplugin - a starting point for your own serve plugin.
 *
 * It answers every request with the request body in upper case, followed by
 * an optional suffix taken from the backend's configuration:
 *
 *     serve create-backend up ./build/myplugin.so --config suffix=!
 *     curl -d 'hello' localhost:8000/upper      # HELLO!
 *
 * A plugin is one shared object that includes <serve/plugin.h> and links
 * nothing else from serve: every serve_* function it calls is provided by
 * the serve process that loads it. The runtime finds the plugin through the
 * single exported symbol that SERVE_PLUGIN_DEFINE (at the bottom) creates.
 *
 * The header documents every function in detail; the life of a plugin is:
 *   init          once per replica, with the backend's --config values;
 *   handle_batch  many times, on the replica's own worker thread, with
 *                 1..max_batch_size requests, each answered exactly once;
 *   destroy       once per replica, after its last handle_batch.
 *
 * To start your own: copy this folder, replace the word "myplugin" in this
 * file's name, in CMakeLists.txt and below, and change handle_batch. */
#include <serve/plugin.h>

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* Everything one replica owns. Each replica gets its own copy from init, so
 * nothing here needs a lock: only that replica's worker thread reads it. */
struct myplugin {
    char *suffix;      /* appended to every answer; "" when not configured */
    size_t suffix_len;
};

/* init: read the configuration and build the replica's state.
 *
 * `config` is only valid during this call, so keep a copy of any value you
 * need later. On failure, say why with serve_replica_fail and return
 * non-zero: `serve create-backend` then fails and prints the message. */
static int myplugin_init(serve_replica *replica, const serve_config *config, void **state)
{
    const char *suffix = serve_config_get(config, "suffix"); /* NULL if not given */
    if (!suffix) suffix = "";
    if (strlen(suffix) > 64) {
        serve_replica_fail(replica, "config suffix is longer than 64 bytes");
        return -1;
    }

    struct myplugin *u = calloc(1, sizeof *u);
    if (u) {
        u->suffix_len = strlen(suffix);
        u->suffix = malloc(u->suffix_len + 1);
    }
    if (!u || !u->suffix) {
        free(u);
        serve_replica_fail(replica, "out of memory");
        return -1;
    }
    memcpy(u->suffix, suffix, u->suffix_len + 1);

    serve_log(replica, SERVE_LOG_INFO, "myplugin ready, suffix \"%s\"", u->suffix);
    *state = u; /* handed back to handle_batch and destroy */
    return 0;
}

/* handle_batch: answer requests[0..n-1].
 *
 * With --max-batch-size 1 (the default) n is always 1; a bigger batch size
 * lets a model work on several requests at once. Every request must get
 * exactly one serve_respond* call. Returning non-zero makes the runtime
 * answer the requests still unanswered with 500. */
static int myplugin_handle_batch(void *state, serve_request *const *requests, size_t n)
{
    struct myplugin *u = state;

    for (size_t i = 0; i < n; i++) {
        size_t len;
        const unsigned char *body = serve_request_body(requests[i], &len);

        /* Build the answer in our own buffer; serve_respond_take hands it
         * to the runtime, which frees it with free() once it is sent. */
        char *out = malloc(len + u->suffix_len + 1);
        if (!out) {
            serve_respond_error(requests[i], 500, "out of memory");
            continue;
        }
        for (size_t j = 0; j < len; j++)
            out[j] = (char)toupper(body[j]);
        memcpy(out + len, u->suffix, u->suffix_len);

        serve_respond_take(requests[i], 200, "text/plain", out, len + u->suffix_len, free);
    }
    return 0;
}

/* destroy: free what init allocated. No request of this replica is being
 * handled any more. */
static void myplugin_destroy(void *state)
{
    struct myplugin *u = state;
    free(u->suffix);
    free(u);
}

/* The descriptor: which ABI this plugin was written for, its name (shown by
 * `serve status` and in logs) and its callbacks. Only handle_batch is
 * required; the header lists the optional ones (reconfigure, for example,
 * takes a new --config without restarting the replicas). */
static const serve_plugin myplugin_plugin = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "myplugin",
    .init = myplugin_init,
    .handle_batch = myplugin_handle_batch,
    .destroy = myplugin_destroy,
};

/* Exports serve_plugin_entry(), which serve calls, and the descriptor's
 * size (serve_plugin_descriptor_size), which it reads. */
SERVE_PLUGIN_DEFINE(myplugin_plugin)
