/* cuda - a sample plugin with its own CUDA kernel: each request is one
 * FP32 tensor of `dim` floats (a JSON or msgpack row, or an Open Inference
 * Protocol body; the runtime decodes it); the whole batch goes to the GPU
 * in one copy, one kernel computes y = scale * tanh(x) + shift, one copy
 * brings it back, and each request gets its row.
 *
 * Config: dim=N (default 64), device=N (default 0), scale, shift (default 1
 * and 0), max_rows=N rows of device memory (default 1024; set it to at least
 * the backend's max batch size). init fails with the CUDA reason where no GPU
 * is present. */
#include <serve/plugin.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kernel.h"

struct cuda_replica {
    cuda_transform *gpu;
    size_t dim, max_rows;
    float scale, shift;
};

static int cuda_init(serve_replica *replica, const serve_config *config, void **state)
{
    struct cuda_replica *c = calloc(1, sizeof *c);
    if (!c) {
        serve_replica_fail(replica, "out of memory");
        return -1;
    }
    int64_t dim, max_rows, device;
    double scale, shift;
    /* A refused value is init's reason ("config dim=x: not an integer"). */
    if (serve_config_int(config, "dim", 64, &dim) != SERVE_OK ||
        serve_config_int(config, "max_rows", 1024, &max_rows) != SERVE_OK ||
        serve_config_number(config, "scale", 1.0, &scale) != SERVE_OK ||
        serve_config_number(config, "shift", 0.0, &shift) != SERVE_OK ||
        serve_config_int(config, "device", 0, &device) != SERVE_OK) {
        free(c);
        return -1;
    }
    c->dim = dim > 0 && dim <= (1 << 20) ? (size_t)dim : 0;
    c->max_rows = max_rows > 0 && max_rows <= (1 << 24) ? (size_t)max_rows : 0;
    c->scale = (float)scale;
    c->shift = (float)shift;
    char err[512];
    if (!c->dim || !c->max_rows ||
        cuda_transform_open((int)device, c->dim * c->max_rows, &c->gpu, err, sizeof err) != 0) {
        serve_replica_fail(replica, "%s", c->dim && c->max_rows ? err : "dim (1..1048576) and max_rows (1..16777216) must be positive");
        free(c);
        return -1;
    }
    const int64_t row[] = {(int64_t)c->dim};
    serve_replica_declare_tensor(replica, SERVE_INPUT, "input", SERVE_TYPE_FP32, row, 1);
    serve_replica_declare_tensor(replica, SERVE_OUTPUT, "output", SERVE_TYPE_FP32, row, 1);
    *state = c;
    return 0;
}

static int cuda_handle_batch(void *state, serve_request *const *requests, size_t n)
{
    struct cuda_replica *c = state;
    float *x = calloc(n * c->dim, sizeof *x), *y = calloc(n * c->dim, sizeof *y);
    bool *good = calloc(n, sizeof *good);
    if (!x || !y || !good) {
        free(x), free(y), free(good);
        return -1;
    }
    size_t rows = 0;
    for (size_t i = 0; i < n; i++) {
        if (rows == c->max_rows) {
            serve_respond_error(requests[i], 503, "cuda: batch larger than max_rows");
            continue;
        }
        /* The runtime decoded the body (the replica declared its input). */
        const serve_tensor *t = serve_request_input(requests[i], 0);
        if (serve_request_input_count(requests[i]) != 1 ||
            serve_tensor_datatype(t) != SERVE_TYPE_FP32 || serve_tensor_count(t) != c->dim) {
            char err[128];
            snprintf(err, sizeof err, "expected one FP32 input row of shape [%zu]", c->dim);
            serve_respond_error(requests[i], 400, err);
            continue;
        }
        memcpy(x + rows++ * c->dim, serve_tensor_data(t, NULL), c->dim * sizeof *x);
        good[i] = true;
    }
    char err[512];
    int rc = rows ? cuda_transform_run(c->gpu, x, y, rows * c->dim, c->scale, c->shift, err, sizeof err) : 0;
    for (size_t i = 0, k = 0; i < n; i++) {
        if (!good[i]) continue; /* answered above */
        if (rc != 0) {
            serve_respond_error(requests[i], 500, err);
            continue;
        }
        const int64_t *in_shape = serve_tensor_shape(serve_request_input(requests[i], 0));
        size_t in_rank = serve_tensor_rank(serve_request_input(requests[i], 0));
        if (serve_response_add_tensor(requests[i], "output", SERVE_TYPE_FP32, in_shape, in_rank,
                                      y + k++ * c->dim, c->dim * sizeof *y) == SERVE_OK)
            serve_respond_tensors(requests[i]);
        else
            serve_respond_error(requests[i], 500, "cuda: out of memory");
    }
    free(x), free(y), free(good);
    return 0;
}

static void cuda_destroy(void *state)
{
    struct cuda_replica *c = state;
    cuda_transform_close(c->gpu);
    free(c);
}

static const serve_plugin cuda_plugin = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "cuda",
    .init = cuda_init,
    .handle_batch = cuda_handle_batch,
    .destroy = cuda_destroy,
};

SERVE_PLUGIN_DEFINE(cuda_plugin)
