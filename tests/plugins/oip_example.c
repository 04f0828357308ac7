/* oip_example - "mymodel" of the Open Inference Protocol's and Triton's
 * binary extension's documents, so their examples can be sent as they are
 * written: inputs input0 (UINT32 [2, 2]) and input1 (BOOL [3]); outputs
 * output0 (FP32 [3, 2]: for input1's element i, the pair i + 1, i + 1.1)
 * and output1 (UINT32 [2, 2]: input0 less one). */
#include <serve/plugin.h>
#include <stdint.h>

static int example_init(serve_replica *replica, const serve_config *config, void **state)
{
    (void)config;
    const int64_t square[] = {2, 2}, three[] = {3}, pairs[] = {3, 2};
    *state = NULL;
    return serve_replica_declare_tensor(replica, SERVE_INPUT, "input0", SERVE_TYPE_UINT32, square, 2) ||
           serve_replica_declare_tensor(replica, SERVE_INPUT, "input1", SERVE_TYPE_BOOL, three, 1) ||
           serve_replica_declare_tensor(replica, SERVE_OUTPUT, "output0", SERVE_TYPE_FP32, pairs, 2) ||
           serve_replica_declare_tensor(replica, SERVE_OUTPUT, "output1", SERVE_TYPE_UINT32, square, 2);
}

static void infer(serve_request *req)
{
    const serve_tensor *in0 = serve_request_input_named(req, "input0");
    const serve_tensor *in1 = serve_request_input_named(req, "input1");
    if (!in0 || !in1 || serve_tensor_datatype(in0) != SERVE_TYPE_UINT32 ||
        serve_tensor_count(in0) != 4 || serve_tensor_datatype(in1) != SERVE_TYPE_BOOL) {
        serve_respond_error(req, 400, "mymodel takes input0 (UINT32 [2, 2]) and input1 (BOOL [3])");
        return;
    }
    const uint32_t *a = serve_tensor_data(in0, NULL);
    size_t n = serve_tensor_count(in1);
    float out0[2 * 16];
    if (n > 16) n = 16;
    for (size_t i = 0; i < n; i++) {
        out0[2 * i] = (float)(i + 1);
        out0[2 * i + 1] = (float)(i + 1) + 0.1f;
    }
    uint32_t out1[4];
    for (int i = 0; i < 4; i++) out1[i] = a[i] - 1;
    const int64_t pairs[] = {(int64_t)n, 2}, square[] = {2, 2};
    serve_response_add_tensor(req, "output0", SERVE_TYPE_FP32, pairs, 2, out0, 2 * n * sizeof(float));
    serve_response_add_tensor(req, "output1", SERVE_TYPE_UINT32, square, 2, out1, sizeof out1);
    serve_respond_tensors(req);
}

static int example_batch(void *state, serve_request *const *reqs, size_t n)
{
    (void)state;
    for (size_t i = 0; i < n; i++) infer(reqs[i]);
    return 0;
}

static const serve_plugin oip_example = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "oip_example",
    .init = example_init,
    .handle_batch = example_batch,
};

SERVE_PLUGIN_DEFINE(oip_example)
