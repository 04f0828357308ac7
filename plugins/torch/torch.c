/* torch - serves a TorchScript model, one forward call per batch.
 *
 * Config: model=PATH (required), device=cpu|cuda[:N] (default cpu),
 * threads=N intra-op threads per replica, dtype=float32|float16|bfloat16
 * (the last two on a GPU), input_shape=64 or 3,32,32 (one row's shape:
 * checked for every row, and used for a warm-up forward at init; without
 * it the first good row of a batch sets the shape for that batch).
 *
 * A request is one input row: a JSON array of numbers (nested for a row of
 * higher rank), or with Content-Type application/msgpack a msgpack array of
 * floats. The answer is the output row in the same format. A row of the
 * wrong shape gets 400 naming the expected shape; its batch-mates are still
 * served. Every answer carries X-Forward-Rows: the rows of the forward call
 * that computed it. */
#include <serve/plugin.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rows.h"
#include "torch_shim.h"

struct torch_replica {
    torch_shim_model *model;
    int64_t input_shape[TORCH_SHIM_MAX_RANK];
    int input_rank; /* 0: not configured */
    unsigned long forward_calls;
    const serve_replica *replica;
};

static int torch_init(serve_replica *replica, const serve_config *config, void **state)
{
    /* model: relative to the deploy file (or the --config command's
     * working directory), so a deploy file works from any directory. */
    char model[4096];
    int64_t threads;
    if (serve_config_path(config, "model", NULL, model, sizeof model) != SERVE_OK ||
        serve_config_int(config, "threads", 0, &threads) != SERVE_OK)
        return -1; /* the getter's reason is init's */
    const char *device = serve_config_get(config, "device");
    const char *dtype = serve_config_get(config, "dtype");
    const char *shape = serve_config_get(config, "input_shape");
    if (!model[0]) {
        serve_replica_fail(replica, "config model=PATH (a TorchScript file) is required");
        return -1;
    }
    if (threads < 0 || threads > 1024) {
        serve_replica_fail(replica, "config threads=%lld: expected 0 (libtorch's default) to 1024",
                           (long long)threads);
        return -1;
    }
    struct torch_replica *t = calloc(1, sizeof *t);
    if (!t) {
        serve_replica_fail(replica, "out of memory");
        return -1;
    }
    t->replica = replica;
    if (shape && !shape_parse(shape, t->input_shape, &t->input_rank)) {
        serve_replica_fail(replica, "config input_shape=%s: expected sizes such as 64 or 3,32,32", shape);
        free(t);
        return -1;
    }
    char err[1024];
    if (torch_shim_load(model, device ? device : "cpu", (int)threads, dtype,
                        &t->model, err, sizeof err) != 0) {
        serve_replica_fail(replica, "%s: %s", model, err);
        free(t);
        return -1;
    }
    if (!t->input_rank && torch_shim_input_shape(t->model, t->input_shape, &t->input_rank) == 0) {
        char read[128];
        shape_format(t->input_shape, t->input_rank, read, sizeof read);
        serve_log(replica, SERVE_LOG_INFO, "torch: input rows of shape %s, read from %s", read,
                  model);
    }
    if (t->input_rank) {
        /* One warm-up forward, so the first request does not pay for it. */
        size_t n = 1;
        for (int i = 0; i < t->input_rank; i++) n *= (size_t)t->input_shape[i];
        float *zeros = calloc(n, sizeof *zeros), *out = NULL;
        int64_t out_shape[TORCH_SHIM_MAX_RANK];
        int out_rank;
        int rc = zeros ? torch_shim_forward(t->model, zeros, 1, t->input_shape, t->input_rank, &out,
                                            out_shape, &out_rank, err, sizeof err)
                       : -1;
        free(zeros);
        free(out);
        if (rc != 0) {
            char expected[128];
            shape_format(t->input_shape, t->input_rank, expected, sizeof expected);
            serve_replica_fail(replica, "%s: warm-up forward with input_shape %s failed: %s", model,
                               expected, zeros ? err : "out of memory");
            torch_shim_free(t->model);
            free(t);
            return -1;
        }
    }
    *state = t;
    return 0;
}

static bool is_msgpack(const serve_request *req)
{
    const char *type = serve_request_header(req, "Content-Type");
    return type && strncasecmp(type, "application/msgpack", 19) == 0;
}

static void answer_row(serve_request *req, const float *data, const int64_t *shape, int rank,
                       size_t rows_in_forward)
{
    size_t count = 1, len = 0;
    for (int i = 0; i < rank; i++) count *= (size_t)shape[i];
    char header[32];
    snprintf(header, sizeof header, "%zu", rows_in_forward);
    serve_response_add_header(req, "X-Forward-Rows", header);
    if (is_msgpack(req)) {
        char *body = row_to_msgpack(data, count, &len);
        if (body) serve_respond_take(req, 200, "application/msgpack", body, len, free);
        else serve_respond_error(req, 500, "torch: out of memory");
    } else {
        char *body = row_to_json(data, shape, rank, &len);
        if (body) serve_respond_take(req, 200, "application/json", body, len, free);
        else serve_respond_error(req, 500, "torch: out of memory");
    }
}

static bool same_shape(const int64_t *a, int ra, const int64_t *b, int rb)
{
    if (ra != rb) return false;
    for (int i = 0; i < ra; i++)
        if (a[i] != b[i]) return false;
    return true;
}

/* One stacked forward over the rows idx[0..k) (all of one shape); their
 * requests answered. Where it fails, the rows are split in halves and run
 * again, down to single rows: a row that fails alone gets 400 with
 * libtorch's reason (its input is what the model refused), and its
 * batch-mates their answers. */
static void forward_rows(struct torch_replica *t, serve_request *const *requests,
                         const struct row *rows, const size_t *idx, size_t k)
{
    const struct row *first = &rows[idx[0]];
    size_t row_size = first->count;
    /* Stacked once into one tensor's memory: the shim borrows it. */
    float *stacked = malloc(k * row_size * sizeof *stacked);
    float *out = NULL;
    int64_t out_shape[TORCH_SHIM_MAX_RANK];
    int out_rank = 0;
    char err[1024];
    if (!stacked) {
        for (size_t i = 0; i < k; i++) serve_respond_error(requests[idx[i]], 500, "torch: out of memory");
        return;
    }
    memcpy(stacked, first->data, row_size * sizeof *stacked); /* k >= 1 */
    for (size_t i = 1; i < k; i++)
        memcpy(stacked + row_size * i, rows[idx[i]].data, row_size * sizeof *stacked);
    int rc = torch_shim_forward(t->model, stacked, (int64_t)k, first->shape, first->rank, &out,
                                out_shape, &out_rank, err, sizeof err);
    t->forward_calls++;
    free(stacked);
    if (rc == 0) {
        size_t out_size = 1;
        for (int d = 0; d < out_rank; d++) out_size *= (size_t)out_shape[d];
        for (size_t i = 0; i < k; i++)
            answer_row(requests[idx[i]], out + out_size * i, out_shape, out_rank, k);
        free(out);
        return;
    }
    if (k == 1) {
        serve_respond_error(requests[idx[0]], 400, err);
        return;
    }
    forward_rows(t, requests, rows, idx, k / 2);
    forward_rows(t, requests, rows, idx + k / 2, k - k / 2);
}

static int torch_handle_batch(void *state, serve_request *const *requests, size_t n)
{
    struct torch_replica *t = state;
    struct row *rows = calloc(n, sizeof *rows);
    bool *pending = calloc(n, sizeof *pending);
    size_t *idx = calloc(n, sizeof *idx);
    if (!rows || !pending || !idx) {
        free(rows);
        free(pending);
        free(idx);
        return -1; /* the runtime answers 500 */
    }
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *body = serve_request_body(requests[i], &len);
        char err[256];
        bool ok = is_msgpack(requests[i]) ? row_parse_msgpack(body, len, &rows[i], err, sizeof err)
                                          : row_parse_json(body, len, &rows[i], err, sizeof err);
        if (!ok) {
            serve_respond_error(requests[i], 400, err);
            continue;
        }
        if (t->input_rank &&
            !same_shape(rows[i].shape, rows[i].rank, t->input_shape, t->input_rank)) {
            char expected[128], got[128], msg[320];
            shape_format(t->input_shape, t->input_rank, expected, sizeof expected);
            shape_format(rows[i].shape, rows[i].rank, got, sizeof got);
            snprintf(msg, sizeof msg, "expected an input row of shape %s, got %s", expected, got);
            serve_respond_error(requests[i], 400, msg);
            continue;
        }
        pending[i] = true;
    }
    /* One forward per shape (one in all when the shape is known): a row of
     * another shape never decides what its batch-mates are checked against. */
    for (size_t i = 0; i < n; i++) {
        if (!pending[i]) continue;
        size_t k = 0;
        for (size_t j = i; j < n; j++)
            if (pending[j] && same_shape(rows[j].shape, rows[j].rank, rows[i].shape, rows[i].rank)) {
                idx[k++] = j;
                pending[j] = false;
            }
        forward_rows(t, requests, rows, idx, k);
    }
    for (size_t i = 0; i < n; i++) row_free(&rows[i]);
    free(rows);
    free(pending);
    free(idx);
    return 0;
}

static void torch_destroy(void *state)
{
    struct torch_replica *t = state;
    serve_log(t->replica, SERVE_LOG_INFO, "torch: %lu forward call(s)", t->forward_calls);
    torch_shim_free(t->model);
    free(t);
}

static const serve_plugin torch_plugin = {
    .abi_version = SERVE_ABI_VERSION,
    .name = "torch",
    .init = torch_init,
    .handle_batch = torch_handle_batch,
    .destroy = torch_destroy,
};

SERVE_PLUGIN_DEFINE(torch_plugin)
