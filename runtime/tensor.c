/* tensor.c - the SDK's tensor functions: which codec a request's body
 * needs, the decoded inputs, the outputs a plugin adds, and the answer. */
#include "tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "replica_context.h"
#include "request.h"

static const struct {
    const char *name;
    size_t size;
} datatypes[] = {
    [SERVE_TYPE_INVALID] = {"INVALID", 0}, [SERVE_TYPE_BOOL] = {"BOOL", 1},
    [SERVE_TYPE_UINT8] = {"UINT8", 1},     [SERVE_TYPE_UINT16] = {"UINT16", 2},
    [SERVE_TYPE_UINT32] = {"UINT32", 4},   [SERVE_TYPE_UINT64] = {"UINT64", 8},
    [SERVE_TYPE_INT8] = {"INT8", 1},       [SERVE_TYPE_INT16] = {"INT16", 2},
    [SERVE_TYPE_INT32] = {"INT32", 4},     [SERVE_TYPE_INT64] = {"INT64", 8},
    [SERVE_TYPE_FP16] = {"FP16", 2},       [SERVE_TYPE_FP32] = {"FP32", 4},
    [SERVE_TYPE_FP64] = {"FP64", 8},       [SERVE_TYPE_BYTES] = {"BYTES", 0},
};
#define DATATYPE_COUNT (sizeof datatypes / sizeof datatypes[0])

SERVE_EXPORT const char *serve_datatype_name(int datatype)
{
    return datatype > 0 && (size_t)datatype < DATATYPE_COUNT ? datatypes[datatype].name
                                                             : "INVALID";
}

SERVE_EXPORT int serve_datatype_from_name(const char *name)
{
    for (size_t i = 1; name && i < DATATYPE_COUNT; i++)
        if (strcmp(datatypes[i].name, name) == 0) return (int)i;
    return SERVE_TYPE_INVALID;
}

SERVE_EXPORT size_t serve_datatype_size(int datatype)
{
    return datatype > 0 && (size_t)datatype < DATATYPE_COUNT ? datatypes[datatype].size : 0;
}

/* -- helpers for the codecs ---------------------------------------------- */

bool tensor_shape_count(const int64_t *shape, size_t rank, size_t *count)
{
    size_t n = 1;
    for (size_t i = 0; i < rank; i++) {
        if (shape[i] < 0) return false;
        if (shape[i] && n > SIZE_MAX / (size_t)shape[i]) return false;
        n *= (size_t)shape[i];
    }
    *count = n;
    return true;
}

bool tensor_bytes_elements(const void *data, size_t bytes, size_t *elements)
{
    const unsigned char *p = data;
    size_t at = 0, n = 0;
    while (at < bytes) {
        if (bytes - at < 4) return false;
        uint32_t len = tensor_le32(p + at);
        at += 4;
        if (len > bytes - at) return false;
        at += len;
        n++;
    }
    *elements = n;
    return true;
}

bool tensor_set_data(struct serve_tensor *t, const void *data, size_t bytes)
{
    size_t align = serve_datatype_size(t->datatype);
    t->bytes = bytes;
    if (bytes && (align < 2 || (uintptr_t)data % align == 0)) {
        t->data = data;
        return true;
    }
    t->owned = malloc(bytes ? bytes : 1);
    if (!t->owned) return false;
    if (bytes) memcpy(t->owned, data, bytes);
    t->data = t->owned;
    return true;
}

void tensor_shape_text(const int64_t *shape, size_t rank, char *out, size_t outlen)
{
    size_t at = 0;
    at += (size_t)snprintf(out, outlen, "[");
    for (size_t i = 0; i < rank && at < outlen; i++)
        at += (size_t)snprintf(out + at, outlen - at, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (at < outlen) snprintf(out + at, outlen - at, "]");
}

bool tensor_check_size(const struct serve_tensor *t, char *err, size_t errlen)
{
    char shape[128];
    tensor_shape_text(t->shape, t->rank, shape, sizeof shape);
    if (t->datatype == SERVE_TYPE_BYTES) {
        size_t elements;
        if (!tensor_bytes_elements(t->data, t->bytes, &elements)) {
            snprintf(err, errlen, "input '%s': BYTES data of %zu bytes: an element's 4-byte "
                     "length runs past the end", t->name, t->bytes);
            return false;
        }
        if (elements != t->count) {
            snprintf(err, errlen, "input '%s': shape %s holds %zu elements, data has %zu",
                     t->name, shape, t->count, elements);
            return false;
        }
        return true;
    }
    size_t size = serve_datatype_size(t->datatype);
    if (t->count > SIZE_MAX / size || t->bytes != t->count * size) {
        snprintf(err, errlen, "input '%s': shape %s of %s takes %zu bytes, data has %zu", t->name,
                 shape, serve_datatype_name(t->datatype), t->count * size, t->bytes);
        return false;
    }
    if (t->datatype == SERVE_TYPE_BOOL) {
        const unsigned char *b = t->data;
        for (size_t i = 0; i < t->bytes; i++)
            if (b[i] > 1) {
                snprintf(err, errlen, "input '%s': BOOL element %zu is %u, not 0 or 1", t->name, i,
                         b[i]);
                return false;
            }
    }
    return true;
}

void tensor_clear(struct serve_tensor *t)
{
    free(t->name);
    free(t->owned);
    memset(t, 0, sizeof *t);
}

bool tensor_want_output(struct tensor_set *ts, int binary, char *err, size_t errlen)
{
    struct tensor_request_output *w = &ts->wanted[ts->wanted_count];
    for (size_t j = 0; j < ts->wanted_count; j++)
        if (strcmp(ts->wanted[j].name, w->name) == 0) {
            snprintf(err, errlen, "output '%s' is asked for twice", w->name);
            free(w->name);
            w->name = NULL;
            return false;
        }
    w->binary = binary;
    ts->wanted_count++;
    return true;
}

bool tensor_set_param(struct tensor_set *ts, const char *key, const char *value)
{
    char **grown = realloc(ts->params, 2 * (ts->param_count + 1) * sizeof *grown);
    if (!grown) return false;
    ts->params = grown;
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return false;
    }
    ts->params[2 * ts->param_count] = k;
    ts->params[2 * ts->param_count + 1] = v;
    ts->param_count++;
    return true;
}

bool tensor_oip_path(const char *path, char *name, size_t namelen, char *version,
                     size_t versionlen)
{
    static const char prefix[] = "/v2/models/";
    if (strncmp(path, prefix, sizeof prefix - 1) != 0) return false;
    const char *p = path + sizeof prefix - 1, *slash = strchr(p, '/');
    if (!slash || slash == p || (size_t)(slash - p) >= namelen) return false;
    snprintf(name, namelen, "%.*s", (int)(slash - p), p);
    version[0] = '\0';
    if (strncmp(slash, "/versions/", 10) == 0) {
        const char *v = slash + 10, *end = strchr(v, '/');
        if (!end || end == v || (size_t)(end - v) >= versionlen) return false;
        snprintf(version, versionlen, "%.*s", (int)(end - v), v);
        slash = end;
    }
    return strcmp(slash, "/infer") == 0;
}

/* -- decoding ------------------------------------------------------------ */

void tensor_set_free(struct tensor_set *ts)
{
    if (!ts) return;
    free(ts->error);
    for (size_t i = 0; i < ts->input_count; i++) tensor_clear(&ts->inputs[i]);
    free(ts->inputs);
    for (size_t i = 0; i < 2 * ts->param_count; i++) free(ts->params[i]);
    free(ts->params);
    free(ts->id);
    for (size_t i = 0; i < ts->wanted_count; i++) free(ts->wanted[i].name);
    free(ts->wanted);
    for (size_t i = 0; i < ts->output_count; i++) tensor_clear(&ts->outputs[i]);
    free(ts->outputs);
    free(ts);
}

static bool header_is(const serve_request *req, const char *name, const char *value)
{
    const char *v = serve_request_header(req, name);
    return v && strncasecmp(v, value, strlen(value)) == 0;
}

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
    return p;
}

/* Chooses the codec by the request's headers and body, and runs it. */
static void decode(serve_request *req, struct tensor_set *ts)
{
    char err[512] = "";
    size_t len = 0;
    const char *body = serve_request_body(req, &len);
    const char *header_len = serve_request_header(req, "Inference-Header-Content-Length");
    bool ok;
    if (header_len) {
        char *end;
        unsigned long long n = strtoull(header_len, &end, 10);
        ts->wire = WIRE_OIP_BINARY;
        if (!*header_len || *end || header_len[0] == '-' || n > len) {
            snprintf(err, sizeof err, "Inference-Header-Content-Length %s: not a length within "
                     "the body's %zu bytes", header_len, len);
            ok = false;
        } else {
            ok = oip_json_decode(ts, body, (size_t)n, body + n, len - (size_t)n, err, sizeof err);
        }
    } else if (header_is(req, "Content-Type", "application/msgpack") ||
               header_is(req, "Content-Type", "application/x-msgpack")) {
        ok = tensor_msgpack_decode(ts, body, len, err, sizeof err);
    } else {
        const char *first = skip_space(body, body + len);
        if (first < body + len && *first == '[') {
            ts->wire = WIRE_ROW_JSON;
            ok = row_json_decode(ts, body, len, err, sizeof err);
        } else {
            ts->wire = WIRE_OIP_JSON;
            ok = oip_json_decode(ts, body, len, NULL, 0, err, sizeof err);
        }
    }
    if (!ok) ts->error = strdup(err[0] ? err : "malformed tensor body");
}

struct tensor_set *tensor_set_of(serve_request *req)
{
    if (req->tensors) return req->tensors;
    struct tensor_set *ts = calloc(1, sizeof *ts);
    if (!ts) return NULL;
    decode(req, ts);
    req->tensors = ts;
    return ts;
}

size_t tensor_admit(serve_request *const *reqs, size_t n, serve_request **kept)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct tensor_set *ts = tensor_set_of(reqs[i]);
        if (!ts)
            serve_respond_error(reqs[i], 500, "out of memory decoding the tensors");
        else if (ts->error)
            /* The server's own shortage is not the client's mistake. */
            serve_respond_error(reqs[i], strcmp(ts->error, "out of memory") == 0 ? 500 : 400,
                                ts->error);
        else
            kept[k++] = reqs[i];
    }
    return k;
}

SERVE_EXPORT int serve_request_input_count(serve_request *req)
{
    if (!req) return SERVE_EINVAL;
    struct tensor_set *ts = tensor_set_of(req);
    if (!ts) return SERVE_ENOMEM;
    return ts->error ? SERVE_EPROTO : (int)ts->input_count;
}

SERVE_EXPORT const serve_tensor *serve_request_input(serve_request *req, size_t i)
{
    struct tensor_set *ts = req ? tensor_set_of(req) : NULL;
    return ts && !ts->error && i < ts->input_count ? &ts->inputs[i] : NULL;
}

SERVE_EXPORT const serve_tensor *serve_request_input_named(serve_request *req, const char *name)
{
    struct tensor_set *ts = req && name ? tensor_set_of(req) : NULL;
    for (size_t i = 0; ts && !ts->error && i < ts->input_count; i++)
        if (strcmp(ts->inputs[i].name, name) == 0) return &ts->inputs[i];
    return NULL;
}

SERVE_EXPORT const char *serve_request_input_error(serve_request *req)
{
    struct tensor_set *ts = req ? tensor_set_of(req) : NULL;
    return ts ? ts->error : "out of memory";
}

SERVE_EXPORT const char *serve_request_parameter(serve_request *req, const char *key)
{
    struct tensor_set *ts = req && key ? tensor_set_of(req) : NULL;
    for (size_t i = 0; ts && i < ts->param_count; i++)
        if (strcmp(ts->params[2 * i], key) == 0) return ts->params[2 * i + 1];
    return NULL;
}

SERVE_EXPORT const char *serve_tensor_name(const serve_tensor *t) { return t ? t->name : NULL; }
SERVE_EXPORT int serve_tensor_datatype(const serve_tensor *t) { return t ? t->datatype : 0; }
SERVE_EXPORT size_t serve_tensor_rank(const serve_tensor *t) { return t ? t->rank : 0; }
SERVE_EXPORT const int64_t *serve_tensor_shape(const serve_tensor *t) { return t ? t->shape : NULL; }
SERVE_EXPORT size_t serve_tensor_count(const serve_tensor *t) { return t ? t->count : 0; }

SERVE_EXPORT const void *serve_tensor_data(const serve_tensor *t, size_t *bytes)
{
    if (bytes) *bytes = t ? t->bytes : 0;
    return t ? t->data : NULL;
}

/* -- answering ----------------------------------------------------------- */

SERVE_EXPORT int serve_response_add_tensor(serve_request *req, const char *name, int datatype,
                                           const int64_t *shape, size_t rank, const void *data,
                                           size_t bytes)
{
    if (!req || !name || !*name || rank > SERVE_MAX_RANK || (rank && !shape) ||
        (bytes && !data) || datatype <= 0 || (size_t)datatype >= DATATYPE_COUNT)
        return SERVE_EINVAL;
    if (req->answered) return SERVE_EALREADY;
    struct tensor_set *ts = tensor_set_of(req);
    if (!ts) return SERVE_ENOMEM;
    struct serve_tensor t = {.datatype = datatype, .rank = rank, .binary = -1};
    if (rank) memcpy(t.shape, shape, rank * sizeof *shape);
    if (!tensor_shape_count(t.shape, rank, &t.count)) return SERVE_EINVAL;
    t.name = (char *)name;
    t.data = data ? data : "";
    t.bytes = bytes;
    char err[256];
    if (!tensor_check_size(&t, err, sizeof err)) return SERVE_EINVAL;
    if (ts->output_count == ts->output_cap) {
        size_t cap = ts->output_cap ? 2 * ts->output_cap : 4;
        struct serve_tensor *grown = realloc(ts->outputs, cap * sizeof *grown);
        if (!grown) return SERVE_ENOMEM;
        ts->outputs = grown;
        ts->output_cap = cap;
    }
    t.name = strdup(name);
    t.owned = malloc(bytes ? bytes : 1);
    if (!t.name || !t.owned) {
        free(t.name);
        free(t.owned);
        return SERVE_ENOMEM;
    }
    if (bytes) memcpy(t.owned, data, bytes);
    t.data = t.owned;
    ts->outputs[ts->output_count++] = t;
    return SERVE_OK;
}

bool tensor_outputs_to_send(struct tensor_set *ts, const struct serve_tensor **out, size_t *count,
                            char *err, size_t errlen)
{
    size_t n = 0;
    if (!ts->wanted_count) {
        for (size_t i = 0; i < ts->output_count; i++) {
            ts->outputs[i].binary = ts->binary_output;
            out[n++] = &ts->outputs[i];
        }
        *count = n;
        return true;
    }
    for (size_t w = 0; w < ts->wanted_count; w++) {
        struct serve_tensor *found = NULL;
        for (size_t i = 0; i < ts->output_count && !found; i++)
            if (strcmp(ts->outputs[i].name, ts->wanted[w].name) == 0) found = &ts->outputs[i];
        if (!found) {
            snprintf(err, errlen, "unknown output '%s': the model's outputs here are",
                     ts->wanted[w].name);
            for (size_t i = 0; i < ts->output_count; i++) {
                size_t at = strlen(err);
                snprintf(err + at, errlen - at, "%s '%s'", i ? "," : "", ts->outputs[i].name);
            }
            if (!ts->output_count) {
                size_t at = strlen(err);
                snprintf(err + at, errlen - at, " none");
            }
            return false;
        }
        found->binary = ts->wanted[w].binary >= 0 ? ts->wanted[w].binary : ts->binary_output;
        out[n++] = found;
    }
    *count = n;
    return true;
}

/* Encodes the outputs as the request came; false with err (400) or, with
 * err empty, out of memory. */
static bool encode(serve_request *req, struct tensor_set *ts, char **body, size_t *len,
                   const char **content_type, size_t *json_len, bool *binary, char *err,
                   size_t errlen)
{
    *json_len = 0;
    *binary = false;
    if (ts->wire == WIRE_ROW_JSON || ts->wire == WIRE_ROW_MSGPACK) {
        if (!ts->output_count) {
            snprintf(err, errlen, "the model gave no output for a row");
            return false;
        }
        *content_type = ts->wire == WIRE_ROW_JSON ? "application/json" : "application/msgpack";
        return ts->wire == WIRE_ROW_JSON ? row_json_encode(&ts->outputs[0], body, len)
                                         : row_msgpack_encode(&ts->outputs[0], body, len);
    }
    /* Room for every output, and for every name asked for (each is one
     * output at most: the decoders refuse a name asked for twice). */
    size_t room = ts->output_count > ts->wanted_count ? ts->output_count : ts->wanted_count;
    const struct serve_tensor *small[8];
    const struct serve_tensor **outs = room <= 8 ? small : malloc(room * sizeof *outs);
    if (!outs) return false;
    size_t n = 0;
    bool ok = tensor_outputs_to_send(ts, outs, &n, err, errlen);
    if (ok && ts->wire == WIRE_MSGPACK) {
        *content_type = "application/msgpack";
        ok = tensor_msgpack_encode(ts, outs, n, body, len);
    } else if (ok) {
        char model[256] = "", version[64] = "";
        tensor_oip_path(serve_request_path(req), model, sizeof model, version, sizeof version);
        ok = oip_json_encode(ts, outs, n, model, version, body, len, json_len, binary);
        *content_type = *binary ? "application/octet-stream" : "application/json";
    }
    if (outs != small) free(outs);
    return ok;
}

SERVE_EXPORT int serve_respond_tensors(serve_request *req)
{
    if (!req) return SERVE_EINVAL;
    if (req->answered) return SERVE_EALREADY;
    struct tensor_set *ts = tensor_set_of(req);
    if (!ts) return serve_respond_error(req, 500, "out of memory");
    char *body = NULL, err[512] = "";
    size_t len = 0, json_len = 0;
    bool binary = false;
    const char *content_type = "application/json";
    if (!encode(req, ts, &body, &len, &content_type, &json_len, &binary, err, sizeof err))
        return serve_respond_error(req, err[0] ? 400 : 500, err[0] ? err : "out of memory");
    if (binary) {
        char header[32];
        snprintf(header, sizeof header, "%zu", json_len);
        serve_response_add_header(req, "Inference-Header-Content-Length", header);
    }
    return serve_respond_take(req, 200, content_type, body, len, free);
}

/* -- declarations -------------------------------------------------------- */

SERVE_EXPORT int serve_replica_declare_tensor(serve_replica *replica, int direction,
                                              const char *name, int datatype,
                                              const int64_t *shape, size_t rank)
{
    if (!replica || !name || !*name || (direction != SERVE_INPUT && direction != SERVE_OUTPUT) ||
        datatype <= 0 || (size_t)datatype >= DATATYPE_COUNT || rank > SERVE_MAX_RANK ||
        (rank && !shape))
        return SERVE_EINVAL;
    for (size_t i = 0; i < rank; i++)
        if (shape[i] < -1) return SERVE_EINVAL;
    if (!replica->in_init) return SERVE_ESTATE;
    struct tensor_decls *d = &replica->decls;
    if (d->count == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 4;
        struct serve_tensor *t = realloc(d->tensors, cap * sizeof *t);
        if (!t) return SERVE_ENOMEM;
        d->tensors = t;
        int *dir = realloc(d->direction, cap * sizeof *dir);
        if (!dir) return SERVE_ENOMEM;
        d->direction = dir;
        d->cap = cap;
    }
    struct serve_tensor *t = &d->tensors[d->count];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return SERVE_ENOMEM;
    t->datatype = datatype;
    t->rank = rank;
    if (rank) memcpy(t->shape, shape, rank * sizeof *shape);
    d->direction[d->count++] = direction;
    if (direction == SERVE_INPUT) d->inputs++;
    return SERVE_OK;
}

void tensor_decls_free(struct tensor_decls *d)
{
    for (size_t i = 0; i < d->count; i++) free(d->tensors[i].name);
    free(d->tensors);
    free(d->direction);
    memset(d, 0, sizeof *d);
}
