/* torch - serves a TorchScript model, one forward call per batch.
 *
 * Config: model=PATH (required), device=cpu|cuda[:N] (default cpu),
 * threads=N intra-op threads per replica, dtype=float32|float16|bfloat16
 * (the last two on a GPU), input_shape=64 or 3,32,32 (one row's shape:
 * checked for every row, and used for a warm-up forward at init; without
 * it the first good row of a batch sets the shape for that batch).
 *
 * A request is one FP32 input tensor, decoded by the runtime from whatever
 * the client sent (serve/plugin.h, "Tensors"): a bare row (a JSON array of
 * numbers, nested for a row of higher rank, or a msgpack array of floats),
 * or an Open Inference Protocol body (JSON or binary) or msgpack map whose
 * tensor holds one row (the row's shape) or N rows ([N, row shape...]).
 * The rows of every request of a batch go through one forward call and
 * are split back: a request gets output "output" with its own rows, in the
 * form it came in. A tensor of the wrong shape gets 400 naming the
 * expected one; its batch-mates are still served. Without input_shape
 * (and a model that does not say), a rank-1 tensor is one row and a higher
 * rank is N rows. Every answer carries X-Forward-Rows: the rows of the
 * forward call that computed it. The replica declares its input and output
 * for GET /v2/models/NAME. */
#include <serve/plugin.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shape.h"
#include "torch_shim.h"

struct torch_replica {
    torch_shim_model *model;
    int64_t input_shape[TORCH_SHIM_MAX_RANK];
    int input_rank; /* 0: not configured */
    int64_t output_shape[TORCH_SHIM_MAX_RANK]; /* one row's, from the warm-up */
    int output_rank;                           /* 0: not known */
    unsigned long forward_calls;
    const serve_replica *replica;
};

/* For the OIP model metadata: rows of any number ([-1, row shape]). A
 * row's rank is below SERVE_MAX_RANK (checked at init), so this fits. */
static int declare(serve_replica *replica, const struct torch_replica *t)
{
    int64_t shape[SERVE_MAX_RANK] = {-1};
    for (int i = 0; i < t->input_rank; i++) shape[i + 1] = t->input_shape[i];
    int rc = serve_replica_declare_tensor(replica, SERVE_INPUT, "input", SERVE_TYPE_FP32, shape,
                                          (size_t)t->input_rank + 1);
    if (rc == SERVE_OK && t->output_rank < SERVE_MAX_RANK) {
        for (int i = 0; i < t->output_rank; i++) shape[i + 1] = t->output_shape[i];
        rc = serve_replica_declare_tensor(replica, SERVE_OUTPUT, "output", SERVE_TYPE_FP32,
                                          shape, (size_t)t->output_rank + 1);
    }
    return rc;
}

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
    /* A request adds a rows dimension: a row has one less than a tensor. */
    if (shape && (!shape_parse(shape, t->input_shape, &t->input_rank) ||
                  t->input_rank >= SERVE_MAX_RANK)) {
        serve_replica_fail(replica, "config input_shape=%s: expected 1 to %d sizes such as 64 or "
                           "3,32,32", shape, SERVE_MAX_RANK - 1);
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
        shape_format(t->input_shape, (size_t)t->input_rank, read, sizeof read);
        serve_log(replica, SERVE_LOG_INFO, "torch: input rows of shape %s, read from %s", read,
                  model);
    }
    if (t->input_rank) {
        /* One warm-up forward, so the first request does not pay for it. */
        size_t n = 1;
        for (int i = 0; i < t->input_rank; i++) n *= (size_t)t->input_shape[i];
        float *zeros = calloc(n, sizeof *zeros), *out = NULL;
        int rc = zeros ? torch_shim_forward(t->model, zeros, 1, t->input_shape, t->input_rank, &out,
                                            t->output_shape, &t->output_rank, err, sizeof err)
                       : -1;
        free(zeros);
        free(out);
        if (rc != 0) {
            char expected[128];
            shape_format(t->input_shape, (size_t)t->input_rank, expected, sizeof expected);
            serve_replica_fail(replica, "%s: warm-up forward with input_shape %s failed: %s", model,
                               expected, zeros ? err : "out of memory");
            torch_shim_free(t->model);
            free(t);
            return -1;
        }
    }
    int rc = declare(replica, t);
    if (rc != SERVE_OK) {
        serve_replica_fail(replica, "cannot declare the model's tensors: %s", serve_strerror(rc));
        torch_shim_free(t->model);
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

/* One request's rows, as its input tensor holds them. */
struct rows {
    const float *data;
    size_t count;                      /* rows */
    const int64_t *shape;              /* one row's */
    int rank;
    bool batched;                      /* [N, row...]: the answer is too */
};

static bool same_shape(const int64_t *a, int ra, const int64_t *b, int rb)
{
    if (ra != rb) return false;
    for (int i = 0; i < ra; i++)
        if (a[i] != b[i]) return false;
    return true;
}

/* The rows of req's input; false after answering it 400. */
static bool read_rows(const struct torch_replica *t, serve_request *req, struct rows *r)
{
    const serve_tensor *in = serve_request_input(req, 0);
    char msg[400], got[128], expected[128];
    int count = serve_request_input_count(req);
    if (count != 1 || serve_tensor_datatype(in) != SERVE_TYPE_FP32) {
        if (count != 1)
            snprintf(msg, sizeof msg, "torch: expected one FP32 input tensor, got %d inputs", count);
        else
            snprintf(msg, sizeof msg, "torch: expected one FP32 input tensor, got %s",
                     serve_datatype_name(serve_tensor_datatype(in)));
        serve_respond_error(req, 400, msg);
        return false;
    }
    const int64_t *shape = serve_tensor_shape(in);
    int rank = (int)serve_tensor_rank(in);
    shape_format(shape, (size_t)rank, got, sizeof got);
    if (t->input_rank) {
        shape_format(t->input_shape, (size_t)t->input_rank, expected, sizeof expected);
        r->batched = rank == t->input_rank + 1 &&
                     same_shape(shape + 1, rank - 1, t->input_shape, t->input_rank);
        if (!r->batched && !same_shape(shape, rank, t->input_shape, t->input_rank)) {
            snprintf(msg, sizeof msg, "expected an input row of shape %s (or rows [N, ...]), got %s",
                     expected, got);
            serve_respond_error(req, 400, msg);
            return false;
        }
    } else {
        r->batched = rank >= 2;
    }
    if (rank == 0 || (r->batched && shape[0] == 0) || rank - r->batched > TORCH_SHIM_MAX_RANK) {
        snprintf(msg, sizeof msg, "expected one or more input rows, got a tensor of shape %s", got);
        serve_respond_error(req, 400, msg);
        return false;
    }
    r->count = r->batched ? (size_t)shape[0] : 1;
    r->shape = shape + r->batched;
    r->rank = rank - r->batched;
    r->data = serve_tensor_data(in, NULL);
    return true;
}

static void answer(serve_request *req, const struct rows *r, const float *out,
                   const int64_t *out_shape, int out_rank, size_t rows_in_forward)
{
    int64_t shape[TORCH_SHIM_MAX_RANK + 1];
    size_t per_row = 1, rank = 0;
    if (r->batched) shape[rank++] = (int64_t)r->count;
    for (int d = 0; d < out_rank; d++) {
        shape[rank++] = out_shape[d];
        per_row *= (size_t)out_shape[d];
    }
    char header[32];
    snprintf(header, sizeof header, "%zu", rows_in_forward);
    serve_response_add_header(req, "X-Forward-Rows", header);
    int rc = rank <= SERVE_MAX_RANK
                 ? serve_response_add_tensor(req, "output", SERVE_TYPE_FP32, shape, rank, out,
                                             r->count * per_row * sizeof *out)
                 : SERVE_EINVAL;
    if (rc == SERVE_OK) {
        serve_respond_tensors(req);
    } else {
        char msg[160];
        snprintf(msg, sizeof msg, "torch: cannot answer an output of rank %zu: %s", rank,
                 serve_strerror(rc));
        serve_respond_error(req, 500, msg);
    }
}

/* One stacked forward over the rows of requests idx[0..k) (all of one row
 * shape); their requests answered. Where it fails, the requests are split
 * in halves and run again, down to single requests: one that fails alone
 * gets 400 with libtorch's reason (its input is what the model refused),
 * and its batch-mates their answers. */
static void forward_rows(struct torch_replica *t, serve_request *const *requests,
                         const struct rows *rows, const size_t *idx, size_t k)
{
    const struct rows *first = &rows[idx[0]];
    size_t row_size = 1, total = 0;
    for (int d = 0; d < first->rank; d++) row_size *= (size_t)first->shape[d];
    for (size_t i = 0; i < k; i++) total += rows[idx[i]].count;
    /* One request's rows are already one block; several are stacked once
     * into one tensor's memory. The shim borrows it. */
    float *stacked = NULL;
    const float *input = first->data;
    if (k > 1) {
        stacked = malloc(total * row_size * sizeof *stacked);
        if (!stacked) {
            for (size_t i = 0; i < k; i++)
                serve_respond_error(requests[idx[i]], 500, "torch: out of memory");
            return;
        }
        for (size_t i = 0, at = 0; i < k; i++) {
            const struct rows *r = &rows[idx[i]];
            memcpy(stacked + at * row_size, r->data, r->count * row_size * sizeof *stacked);
            at += r->count;
        }
        input = stacked;
    }
    float *out = NULL;
    int64_t out_shape[TORCH_SHIM_MAX_RANK];
    int out_rank = 0;
    char err[1024];
    int rc = torch_shim_forward(t->model, input, (int64_t)total, first->shape, first->rank, &out,
                                out_shape, &out_rank, err, sizeof err);
    t->forward_calls++;
    free(stacked);
    if (rc == 0) {
        size_t out_size = 1;
        for (int d = 0; d < out_rank; d++) out_size *= (size_t)out_shape[d];
        for (size_t i = 0, at = 0; i < k; i++) {
            answer(requests[idx[i]], &rows[idx[i]], out + out_size * at, out_shape, out_rank, total);
            at += rows[idx[i]].count;
        }
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
    struct rows *rows = calloc(n, sizeof *rows);
    bool *pending = calloc(n, sizeof *pending);
    size_t *idx = calloc(n, sizeof *idx);
    if (!rows || !pending || !idx) {
        free(rows);
        free(pending);
        free(idx);
        return -1; /* the runtime answers 500 */
    }
    for (size_t i = 0; i < n; i++) pending[i] = read_rows(t, requests[i], &rows[i]);
    /* One forward per row shape (one in all when the shape is known): a
     * request of another shape never decides what its batch-mates are
     * checked against. */
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
