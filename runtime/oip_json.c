/* oip_json.c - the Open Inference Protocol's JSON documents (and bare JSON
 * rows): decoded with json-c, written with a small appender (numbers in
 * their shortest exact form, names escaped).
 *
 * The binary tensor data extension shares the document: an input with
 * parameters.binary_data_size takes its data from the bytes after the
 * JSON, in input order; an output sent binary carries its size there and
 * its bytes after the answer's JSON. */
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor.h"

/* -- writing ------------------------------------------------------------- */

struct jw {
    char *p;
    size_t len, cap;
    bool oom;
};

static bool jw_reserve(struct jw *w, size_t more)
{
    if (w->oom) return false;
    if (w->len + more + 1 <= w->cap) return true;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + more + 1) cap *= 2;
    char *p = realloc(w->p, cap);
    if (!p) {
        w->oom = true;
        return false;
    }
    w->p = p;
    w->cap = cap;
    return true;
}

static void jw_raw(struct jw *w, const void *data, size_t len)
{
    if (!jw_reserve(w, len)) return;
    memcpy(w->p + w->len, data, len);
    w->len += len;
}

static void jw_s(struct jw *w, const char *s) { jw_raw(w, s, strlen(s)); }

static void jw_printf(struct jw *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jw_printf(struct jw *w, const char *fmt, ...)
{
    if (!jw_reserve(w, 64)) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(w->p + w->len, w->cap - w->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= w->cap - w->len) {
        if (!jw_reserve(w, (size_t)n)) return;
        va_start(ap, fmt);
        vsnprintf(w->p + w->len, w->cap - w->len, fmt, ap);
        va_end(ap);
    }
    w->len += (size_t)n;
}

/* A JSON string of `len` bytes, escaped. */
static void jw_str(struct jw *w, const char *s, size_t len)
{
    jw_raw(w, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            jw_raw(w, e, 2);
        } else if (c < 0x20) {
            jw_printf(w, "\\u%04x", c);
        } else {
            jw_raw(w, &s[i], 1);
        }
    }
    jw_raw(w, "\"", 1);
}

/* The shortest text that reads back as the same float (or double). */
static void jw_float(struct jw *w, double v, bool single)
{
    if (!isfinite(v)) {
        jw_s(w, "null"); /* JSON has no NaN or infinity */
        return;
    }
    if (v == 0 && signbit(v)) {
        jw_s(w, "-0.0"); /* "-0" reads back as the integer 0 */
        return;
    }
    char buf[40];
    for (int precision = single ? 6 : 15; precision <= (single ? 9 : 17); precision++) {
        snprintf(buf, sizeof buf, "%.*g", precision, v);
        double back = strtod(buf, NULL);
        if (single ? (float)back == (float)v : back == v) break;
    }
    jw_s(w, buf);
}

static void jw_element(struct jw *w, int datatype, const unsigned char *p)
{
    switch (datatype) {
    case SERVE_TYPE_BOOL: jw_s(w, *p ? "true" : "false"); break;
    case SERVE_TYPE_UINT8: jw_printf(w, "%u", *p); break;
    case SERVE_TYPE_UINT16: { uint16_t v; memcpy(&v, p, 2); jw_printf(w, "%u", v); break; }
    case SERVE_TYPE_UINT32: { uint32_t v; memcpy(&v, p, 4); jw_printf(w, "%u", v); break; }
    case SERVE_TYPE_UINT64: { uint64_t v; memcpy(&v, p, 8); jw_printf(w, "%llu", (unsigned long long)v); break; }
    case SERVE_TYPE_INT8: jw_printf(w, "%d", (int8_t)*p); break;
    case SERVE_TYPE_INT16: { int16_t v; memcpy(&v, p, 2); jw_printf(w, "%d", v); break; }
    case SERVE_TYPE_INT32: { int32_t v; memcpy(&v, p, 4); jw_printf(w, "%d", v); break; }
    case SERVE_TYPE_INT64: { int64_t v; memcpy(&v, p, 8); jw_printf(w, "%lld", (long long)v); break; }
    case SERVE_TYPE_FP32: { float v; memcpy(&v, p, 4); jw_float(w, v, true); break; }
    case SERVE_TYPE_FP64: { double v; memcpy(&v, p, 8); jw_float(w, v, false); break; }
    default: jw_s(w, "null"); break; /* FP16 never goes as JSON */
    }
}

/* The tensor's data as a JSON array: flat, or nested by its shape. */
static void jw_data(struct jw *w, const struct serve_tensor *t, bool nested)
{
    const unsigned char *p = t->data;
    size_t size = serve_datatype_size(t->datatype);
    size_t dims = nested && t->count ? t->rank : 0;
    /* block[d]: the elements of one array at depth d; an array opens where
     * an index is a multiple of it and closes after the last. */
    size_t block[SERVE_MAX_RANK + 1];
    block[dims] = 1;
    for (size_t d = dims; d-- > 0;) block[d] = block[d + 1] * (size_t)t->shape[d];
    if (!dims) jw_raw(w, "[", 1);
    size_t at = 0;
    for (size_t i = 0; i < t->count; i++) {
        if (i) jw_raw(w, ",", 1);
        for (size_t d = 0; d < dims; d++)
            if (i % block[d] == 0) jw_raw(w, "[", 1);
        if (t->datatype == SERVE_TYPE_BYTES) {
            uint32_t len = tensor_le32(p + at);
            jw_str(w, (const char *)p + at + 4, len);
            at += 4 + len;
        } else {
            jw_element(w, t->datatype, p + i * size);
        }
        for (size_t d = dims; d-- > 0;)
            if ((i + 1) % block[d] == 0) jw_raw(w, "]", 1);
    }
    if (!dims) jw_raw(w, "]", 1);
}

static void jw_shape(struct jw *w, const int64_t *shape, size_t rank)
{
    jw_raw(w, "[", 1);
    for (size_t i = 0; i < rank; i++) jw_printf(w, "%s%lld", i ? "," : "", (long long)shape[i]);
    jw_raw(w, "]", 1);
}

static bool jw_finish(struct jw *w, char **body, size_t *len)
{
    if (w->oom || !jw_reserve(w, 0)) {
        free(w->p);
        return false;
    }
    w->p[w->len] = '\0';
    *body = w->p;
    *len = w->len;
    return true;
}

bool oip_json_encode(const struct tensor_set *ts, const struct serve_tensor *const *outs,
                     size_t n, const char *model, const char *version, char **body,
                     size_t *len, size_t *json_len, bool *binary)
{
    *binary = false;
    struct jw w = {0};
    jw_s(&w, "{");
    const char *sep = "";
    if (model && *model) {
        jw_s(&w, "\"model_name\":");
        jw_str(&w, model, strlen(model));
        sep = ",";
    }
    if (version && *version) {
        jw_s(&w, ",\"model_version\":");
        jw_str(&w, version, strlen(version));
    }
    if (ts->id) {
        jw_printf(&w, "%s\"id\":", sep);
        jw_str(&w, ts->id, strlen(ts->id));
        sep = ",";
    }
    jw_printf(&w, "%s\"outputs\":[", sep);
    size_t binary_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const struct serve_tensor *t = outs[i];
        jw_s(&w, i ? ",{\"name\":" : "{\"name\":");
        jw_str(&w, t->name, strlen(t->name));
        jw_printf(&w, ",\"datatype\":\"%s\",\"shape\":", serve_datatype_name(t->datatype));
        jw_shape(&w, t->shape, t->rank);
        /* FP16 has no JSON form: it goes binary whatever was asked. */
        if (t->binary == 1 || t->datatype == SERVE_TYPE_FP16) {
            jw_printf(&w, ",\"parameters\":{\"binary_data_size\":%zu}}", t->bytes);
            binary_bytes += t->bytes;
            *binary = true;
        } else {
            jw_s(&w, ",\"data\":");
            jw_data(&w, t, false);
            jw_s(&w, "}");
        }
    }
    jw_s(&w, "]}");
    *json_len = w.len;
    if (binary_bytes && jw_reserve(&w, binary_bytes))
        for (size_t i = 0; i < n; i++)
            if (outs[i]->binary == 1 || outs[i]->datatype == SERVE_TYPE_FP16)
                jw_raw(&w, outs[i]->data, outs[i]->bytes);
    return jw_finish(&w, body, len);
}

bool row_json_encode(const struct serve_tensor *t, char **body, size_t *len)
{
    struct jw w = {0};
    jw_data(&w, t, true);
    return jw_finish(&w, body, len);
}

char *tensor_decls_json(const struct tensor_decls *d)
{
    struct jw w = {0};
    for (int dir = SERVE_INPUT; dir <= SERVE_OUTPUT; dir++) {
        jw_s(&w, dir == SERVE_INPUT ? "\"inputs\":[" : ",\"outputs\":[");
        bool first = true;
        for (size_t i = 0; i < d->count; i++) {
            if (d->direction[i] != dir) continue;
            const struct serve_tensor *t = &d->tensors[i];
            jw_s(&w, first ? "{\"name\":" : ",{\"name\":");
            jw_str(&w, t->name, strlen(t->name));
            jw_printf(&w, ",\"datatype\":\"%s\",\"shape\":", serve_datatype_name(t->datatype));
            jw_shape(&w, t->shape, t->rank);
            jw_s(&w, "}");
            first = false;
        }
        jw_s(&w, "]");
    }
    char *out;
    size_t len;
    return jw_finish(&w, &out, &len) ? out : NULL;
}

/* -- reading ------------------------------------------------------------- */

/* Parses exactly `len` bytes as one JSON value; NULL with err set. */
static json_object *parse(const char *text, size_t len, char *err, size_t errlen)
{
    if (len > INT32_MAX) {
        snprintf(err, errlen, "JSON document of %zu bytes is too large", len);
        return NULL;
    }
    struct json_tokener *tok = json_tokener_new_ex(64);
    if (!tok) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT); /* no NaN, no single quotes */
    json_object *doc = json_tokener_parse_ex(tok, text, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    if (!doc && e == json_tokener_continue) {
        snprintf(err, errlen, "malformed JSON: the document ends early (%zu bytes)", len);
    } else if (!doc || e != json_tokener_success) {
        snprintf(err, errlen, "malformed JSON at byte %zu: %s", end, json_tokener_error_desc(e));
    } else {
        while (end < len && strchr(" \t\r\n", text[end])) end++;
        if (end < len) {
            snprintf(err, errlen, "malformed JSON: unexpected text at byte %zu after the document",
                     end);
            json_object_put(doc);
            doc = NULL;
        }
    }
    json_tokener_free(tok);
    return doc;
}

/* A growing buffer for one input's decoded elements. */
struct elements {
    unsigned char *p;
    size_t len, cap, count;
};

static bool put(struct elements *e, const void *data, size_t len)
{
    if (e->len + len > e->cap) {
        size_t cap = e->cap ? e->cap : 64;
        while (cap < e->len + len) cap *= 2;
        unsigned char *p = realloc(e->p, cap);
        if (!p) return false;
        e->p = p;
        e->cap = cap;
    }
    memcpy(e->p + e->len, data, len);
    e->len += len;
    return true;
}

/* One JSON element as `datatype`; false with err naming the input. */
static bool put_element(struct elements *e, int datatype, json_object *v, const char *name,
                        char *err, size_t errlen)
{
    enum json_type type = json_object_get_type(v);
    size_t index = e->count;
    bool is_int = type == json_type_int, is_number = is_int || type == json_type_double;
    int64_t i64 = is_int ? json_object_get_int64(v) : 0;
    uint64_t u64 = is_int ? json_object_get_uint64(v) : 0;
    bool negative = is_int && i64 < 0;
    union {
        uint8_t u8; uint16_t u16; uint32_t u32; uint64_t u64;
        int8_t i8; int16_t i16; int32_t i32; int64_t i64; float f; double d;
    } out;
    size_t size = serve_datatype_size(datatype);
    bool ok = true;
    const char *want = "";
    switch (datatype) {
    case SERVE_TYPE_BOOL:
        ok = type == json_type_boolean;
        out.u8 = ok && json_object_get_boolean(v);
        want = "true or false";
        break;
    case SERVE_TYPE_UINT8: ok = is_int && !negative && u64 <= UINT8_MAX; out.u8 = (uint8_t)u64; break;
    case SERVE_TYPE_UINT16: ok = is_int && !negative && u64 <= UINT16_MAX; out.u16 = (uint16_t)u64; break;
    case SERVE_TYPE_UINT32: ok = is_int && !negative && u64 <= UINT32_MAX; out.u32 = (uint32_t)u64; break;
    case SERVE_TYPE_UINT64: ok = is_int && !negative; out.u64 = u64; break;
    case SERVE_TYPE_INT8: ok = is_int && i64 >= INT8_MIN && i64 <= INT8_MAX && (negative || u64 <= INT8_MAX); out.i8 = (int8_t)i64; break;
    case SERVE_TYPE_INT16: ok = is_int && i64 >= INT16_MIN && i64 <= INT16_MAX && (negative || u64 <= INT16_MAX); out.i16 = (int16_t)i64; break;
    case SERVE_TYPE_INT32: ok = is_int && i64 >= INT32_MIN && i64 <= INT32_MAX && (negative || u64 <= INT32_MAX); out.i32 = (int32_t)i64; break;
    case SERVE_TYPE_INT64: ok = is_int && (negative || u64 <= INT64_MAX); out.i64 = i64; break;
    case SERVE_TYPE_FP32: {
        double d = json_object_get_double(v);
        ok = is_number && isfinite((float)d); /* what rounds to FLT_MAX is in */
        out.f = (float)d;
        want = is_number ? "within float32 range" : "a number";
        break;
    }
    case SERVE_TYPE_FP64:
        out.d = json_object_get_double(v);
        ok = is_number && isfinite(out.d);
        want = "a finite number";
        break;
    case SERVE_TYPE_BYTES: {
        if (type != json_type_string) {
            snprintf(err, errlen, "input '%s': element %zu is not a string (BYTES)", name, index);
            return false;
        }
        size_t len = (size_t)json_object_get_string_len(v);
        unsigned char prefix[4] = {(unsigned char)len, (unsigned char)(len >> 8),
                                   (unsigned char)(len >> 16), (unsigned char)(len >> 24)};
        e->count++;
        if (!put(e, prefix, 4) || !put(e, json_object_get_string(v), len)) {
            snprintf(err, errlen, "out of memory");
            return false;
        }
        return true;
    }
    default:
        snprintf(err, errlen, "input '%s': %s data cannot be sent as JSON; use the binary "
                 "tensor data extension", name, serve_datatype_name(datatype));
        return false;
    }
    if (!ok) {
        if (!*want) want = "an integer in its range";
        snprintf(err, errlen, "input '%s': element %zu (%s) is not %s for %s", name, index,
                 json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN), want,
                 serve_datatype_name(datatype));
        return false;
    }
    e->count++;
    if (!put(e, &out, size)) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    return true;
}

/* The elements of `data`, flattened (OIP accepts nested or flat arrays). */
static bool flatten(struct elements *e, int datatype, json_object *data, const char *name,
                    char *err, size_t errlen)
{
    if (!json_object_is_type(data, json_type_array))
        return put_element(e, datatype, data, name, err, errlen);
    size_t n = json_object_array_length(data);
    for (size_t i = 0; i < n; i++)
        if (!flatten(e, datatype, json_object_array_get_idx(data, i), name, err, errlen))
            return false;
    return true;
}

static bool read_shape(json_object *shape, struct serve_tensor *t, char *err, size_t errlen)
{
    if (!shape || !json_object_is_type(shape, json_type_array)) {
        snprintf(err, errlen, "input '%s': \"shape\" must be an array of sizes", t->name);
        return false;
    }
    size_t rank = json_object_array_length(shape);
    if (rank > SERVE_MAX_RANK) {
        snprintf(err, errlen, "input '%s': rank %zu is over %d", t->name, rank, SERVE_MAX_RANK);
        return false;
    }
    for (size_t i = 0; i < rank; i++) {
        json_object *d = json_object_array_get_idx(shape, i);
        if (!json_object_is_type(d, json_type_int) || json_object_get_int64(d) < 0) {
            snprintf(err, errlen, "input '%s': shape entry %zu is not a size (0 or more)", t->name,
                     i);
            return false;
        }
        t->shape[i] = json_object_get_int64(d);
    }
    t->rank = rank;
    if (!tensor_shape_count(t->shape, rank, &t->count) ||
        (t->count && t->count > SIZE_MAX / 16)) {
        snprintf(err, errlen, "input '%s': shape is too large", t->name);
        return false;
    }
    return true;
}

static const char *param_text(json_object *v)
{
    return json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
}

/* One entry of "inputs"; binary data taken from *binary on. */
static bool read_input(json_object *in, size_t index, struct serve_tensor *t, const char **binary,
                       size_t *binary_left, char *err, size_t errlen)
{
    json_object *name, *datatype, *shape, *data, *params, *size = NULL;
    if (!json_object_is_type(in, json_type_object) ||
        !json_object_object_get_ex(in, "name", &name) ||
        !json_object_is_type(name, json_type_string)) {
        snprintf(err, errlen, "input %zu: an object with a \"name\" string is required", index);
        return false;
    }
    t->name = strdup(json_object_get_string(name));
    if (!t->name) return false;
    if (!json_object_object_get_ex(in, "datatype", &datatype) ||
        !json_object_is_type(datatype, json_type_string)) {
        snprintf(err, errlen, "input '%s': \"datatype\" is required", t->name);
        return false;
    }
    t->datatype = serve_datatype_from_name(json_object_get_string(datatype));
    if (!t->datatype) {
        snprintf(err, errlen, "input '%s': unknown datatype \"%s\" (BOOL, UINT8..UINT64, "
                 "INT8..INT64, FP16, FP32, FP64 or BYTES)", t->name,
                 json_object_get_string(datatype));
        return false;
    }
    if (!read_shape(json_object_object_get_ex(in, "shape", &shape) ? shape : NULL, t, err, errlen))
        return false;
    if (json_object_object_get_ex(in, "parameters", &params) &&
        json_object_is_type(params, json_type_object))
        json_object_object_get_ex(params, "binary_data_size", &size);
    bool has_data = json_object_object_get_ex(in, "data", &data);
    if (size) {
        if (!json_object_is_type(size, json_type_int) || json_object_get_int64(size) < 0) {
            snprintf(err, errlen, "input '%s': binary_data_size must be a size", t->name);
            return false;
        }
        uint64_t n = (uint64_t)json_object_get_int64(size);
        if (!*binary) {
            snprintf(err, errlen, "input '%s': binary_data_size without binary data (send the "
                     "Inference-Header-Content-Length header)", t->name);
            return false;
        }
        if (n > *binary_left) {
            snprintf(err, errlen, "input '%s': binary_data_size %llu runs past the body (%zu "
                     "bytes of binary data left)", t->name, (unsigned long long)n, *binary_left);
            return false;
        }
        if (!tensor_set_data(t, *binary, (size_t)n)) return false;
        *binary += n;
        *binary_left -= (size_t)n;
    } else if (has_data) {
        struct elements e = {0};
        bool ok = flatten(&e, t->datatype, data, t->name, err, errlen);
        if (ok && e.count != t->count) ok = false;
        if (!ok && !err[0]) {
            char shape[128];
            tensor_shape_text(t->shape, t->rank, shape, sizeof shape);
            snprintf(err, errlen, "input '%s': shape %s holds %zu elements, data has %zu",
                     t->name, shape, t->count, e.count);
        }
        if (!ok) {
            free(e.p);
            return false;
        }
        t->owned = e.p ? e.p : malloc(1);
        t->data = t->owned;
        t->bytes = e.len;
        if (!t->owned) return false;
    } else {
        snprintf(err, errlen, "input '%s': neither \"data\" nor parameters.binary_data_size",
                 t->name);
        return false;
    }
    return tensor_check_size(t, err, errlen);
}

static bool read_outputs(struct tensor_set *ts, json_object *outputs, char *err, size_t errlen)
{
    if (!json_object_is_type(outputs, json_type_array)) {
        snprintf(err, errlen, "\"outputs\" must be an array");
        return false;
    }
    size_t n = json_object_array_length(outputs);
    ts->wanted = calloc(n ? n : 1, sizeof *ts->wanted);
    if (!ts->wanted) return false;
    for (size_t i = 0; i < n; i++) {
        json_object *o = json_object_array_get_idx(outputs, i), *name, *params, *binary;
        if (!json_object_is_type(o, json_type_object) ||
            !json_object_object_get_ex(o, "name", &name) ||
            !json_object_is_type(name, json_type_string)) {
            snprintf(err, errlen, "output %zu: an object with a \"name\" string is required", i);
            return false;
        }
        struct tensor_request_output *w = &ts->wanted[ts->wanted_count++];
        w->binary = -1;
        w->name = strdup(json_object_get_string(name));
        if (!w->name) return false;
        if (json_object_object_get_ex(o, "parameters", &params) &&
            json_object_is_type(params, json_type_object) &&
            json_object_object_get_ex(params, "binary_data", &binary))
            w->binary = json_object_get_boolean(binary) ? 1 : 0;
    }
    return true;
}

static bool read_document(struct tensor_set *ts, json_object *doc, const char *binary,
                          size_t binary_len, char *err, size_t errlen)
{
    if (!json_object_is_type(doc, json_type_object)) {
        snprintf(err, errlen, "the inference request must be a JSON object");
        return false;
    }
    json_object *id, *params, *inputs, *outputs;
    if (json_object_object_get_ex(doc, "id", &id)) {
        if (!json_object_is_type(id, json_type_string)) {
            snprintf(err, errlen, "\"id\" must be a string");
            return false;
        }
        if (!(ts->id = strdup(json_object_get_string(id)))) return false;
    }
    if (json_object_object_get_ex(doc, "parameters", &params)) {
        if (!json_object_is_type(params, json_type_object)) {
            snprintf(err, errlen, "\"parameters\" must be an object");
            return false;
        }
        json_object_object_foreach(params, key, value)
        {
            if (!tensor_set_param(ts, key, param_text(value))) return false;
            if (strcmp(key, "binary_data_output") == 0)
                ts->binary_output = json_object_get_boolean(value);
        }
    }
    if (!json_object_object_get_ex(doc, "inputs", &inputs) ||
        !json_object_is_type(inputs, json_type_array)) {
        snprintf(err, errlen, "\"inputs\" (an array of tensors) is required");
        return false;
    }
    size_t n = json_object_array_length(inputs);
    ts->inputs = calloc(n ? n : 1, sizeof *ts->inputs);
    if (!ts->inputs) return false;
    size_t binary_left = binary_len;
    for (size_t i = 0; i < n; i++) {
        ts->input_count++;
        if (!read_input(json_object_array_get_idx(inputs, i), i, &ts->inputs[i], &binary,
                        &binary_left, err, errlen))
            return false;
        for (size_t j = 0; j < i; j++)
            if (strcmp(ts->inputs[j].name, ts->inputs[i].name) == 0) {
                snprintf(err, errlen, "input '%s' is given twice", ts->inputs[i].name);
                return false;
            }
    }
    if (binary && binary_left) {
        snprintf(err, errlen, "%zu bytes of binary data after the last input's "
                 "binary_data_size", binary_left);
        return false;
    }
    if (json_object_object_get_ex(doc, "outputs", &outputs) &&
        !read_outputs(ts, outputs, err, errlen))
        return false;
    return true;
}

bool oip_json_decode(struct tensor_set *ts, const char *json, size_t json_len, const char *binary,
                     size_t binary_len, char *err, size_t errlen)
{
    json_object *doc = parse(json, json_len, err, errlen);
    if (!doc) return false;
    /* binary is NULL for a plain JSON request: binary_data_size is then an
     * error; for a binary one it is the (possibly empty) rest of the body. */
    bool ok = read_document(ts, doc, binary, binary_len, err, errlen);
    if (!ok && !err[0]) snprintf(err, errlen, "out of memory");
    json_object_put(doc);
    return ok;
}

/* Every array at depth d has shape[d] entries, and only depth `rank`
 * holds numbers. */
static bool rectangular(json_object *v, const int64_t *shape, size_t d, size_t rank)
{
    bool array = json_object_is_type(v, json_type_array);
    if (d == rank) return !array;
    if (!array || json_object_array_length(v) != (size_t)shape[d]) return false;
    for (size_t i = 0; i < (size_t)shape[d]; i++)
        if (!rectangular(json_object_array_get_idx(v, i), shape, d + 1, rank)) return false;
    return true;
}

/* A bare row: nested arrays of numbers, rectangular, as one FP32 input. */
bool row_json_decode(struct tensor_set *ts, const char *json, size_t len, char *err,
                     size_t errlen)
{
    json_object *doc = parse(json, len, err, errlen);
    if (!doc) return false;
    ts->inputs = calloc(1, sizeof *ts->inputs);
    bool ok = ts->inputs != NULL;
    struct serve_tensor *t = ts->inputs;
    if (ok) {
        ts->input_count = 1;
        t->name = strdup("input");
        t->datatype = SERVE_TYPE_FP32;
        ok = t->name != NULL;
    }
    /* The shape: the first element's, level by level. */
    for (json_object *level = doc; ok && json_object_is_type(level, json_type_array);
         level = json_object_array_get_idx(level, 0)) {
        if (t->rank == SERVE_MAX_RANK) {
            snprintf(err, errlen, "a row nested deeper than %d levels", SERVE_MAX_RANK);
            ok = false;
            break;
        }
        t->shape[t->rank++] = (int64_t)json_object_array_length(level);
        if (!json_object_array_length(level)) break;
    }
    if (ok && !tensor_shape_count(t->shape, t->rank, &t->count)) ok = false;
    struct elements e = {0};
    if (ok && t->rank == 0) {
        snprintf(err, errlen, "a row must be a JSON array of numbers");
        ok = false;
    }
    if (ok) ok = flatten(&e, SERVE_TYPE_FP32, doc, "input", err, errlen);
    /* Rectangular: each level's arrays as long as the first one's (a
     * ragged row flattens to the wrong count, or to the right count in the
     * wrong places: checked level by level). */
    if (ok && (e.count != t->count || !rectangular(doc, t->shape, 0, t->rank))) ok = false;
    if (!ok) {
        if (!err[0])
            snprintf(err, errlen, "a row must be a rectangular array of numbers (expected %zu "
                     "elements by its first entries, got %zu)", t->count, e.count);
        free(e.p);
        json_object_put(doc);
        return false;
    }
    t->owned = e.p ? e.p : malloc(1);
    t->data = t->owned;
    t->bytes = e.len;
    json_object_put(doc);
    return t->owned != NULL;
}
