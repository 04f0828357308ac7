/* tensor_echo - answers every input tensor back as an output of the same
 * name, datatype, shape and data, through the SDK's tensor API: whatever
 * the wire format, the runtime decodes and encodes.
 *   request parameter "tag": also answers a BYTES output "tag" [1] holding
 *   the parameter's text (parameters reach the plugin);
 *   config declare=1: declares one input "x" (FP32 [-1, 4]) and one output
 *   "x", so the runtime decodes before handle_batch and answers bad bodies
 *   with 400 itself. Without it the plugin decodes on first use and
 *   answers a bad body with serve_request_input_error. */
#include <serve/plugin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int echo_init(serve_replica *replica, const serve_config *config, void **state)
{
    int declare;
    if (serve_config_bool(config, "declare", 0, &declare) != SERVE_OK) return -1;
    if (declare) {
        const int64_t shape[] = {-1, 4};
        if (serve_replica_declare_tensor(replica, SERVE_INPUT, "x", SERVE_TYPE_FP32, shape, 2) ||
            serve_replica_declare_tensor(replica, SERVE_OUTPUT, "x", SERVE_TYPE_FP32, shape, 2))
            return -1;
    }
    *state = NULL;
    return 0;
}

static void echo_one(serve_request *req)
{
    int n = serve_request_input_count(req);
    if (n < 0) {
        /* Its own refusal is marked, so that tests tell it from the
         * runtime's (which a replica that declared inputs gets instead). */
        char msg[600];
        snprintf(msg, sizeof msg, "tensor_echo: %s", serve_request_input_error(req));
        serve_respond_error(req, 400, msg);
        return;
    }
    for (int i = 0; i < n; i++) {
        const serve_tensor *t = serve_request_input(req, (size_t)i);
        size_t bytes;
        const void *data = serve_tensor_data(t, &bytes);
        if (serve_response_add_tensor(req, serve_tensor_name(t), serve_tensor_datatype(t),
                                      serve_tensor_shape(t), serve_tensor_rank(t), data,
                                      bytes) != SERVE_OK) {
            serve_respond_error(req, 500, "tensor_echo: could not add an output");
            return;
        }
    }
    const char *tag = serve_request_parameter(req, "tag");
    if (tag) {
        size_t len = strlen(tag);
        unsigned char *element = malloc(4 + len);
        if (!element) {
            serve_respond_error(req, 500, "out of memory");
            return;
        }
        element[0] = (unsigned char)len;
        element[1] = (unsigned char)(len >> 8);
        element[2] = (unsigned char)(len >> 16);
        element[3] = (unsigned char)(len >> 24);
        memcpy(element + 4, tag, len);
        const int64_t shape[] = {1};
        serve_response_add_tensor(req, "tag", SERVE_TYPE_BYTES, shape, 1, element, 4 + len);
        free(element);
    }
    serve_respond_tensors(req);
}

static int echo_batch(void *state, serve_request *const *reqs, size_t n)
{
    (void)state;
    for (size_t i = 0; i < n; i++) echo_one(reqs[i]);
    return 0;
}

static const serve_plugin tensor_echo = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "tensor_echo",
    .init = echo_init,
    .handle_batch = echo_batch,
};

SERVE_PLUGIN_DEFINE(tensor_echo)
