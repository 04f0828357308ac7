/* oip_json.c - the Open Inference Protocol's JSON documents (and bare JSON
 * rows): read with simdjson (json_dom.h), written with a small appender
 * (numbers in a form that reads back exactly, names escaped).
 *
 * The binary tensor data extension shares the document: an input with
 * parameters.binary_data_size takes its data from the bytes after the
 * JSON, in input order; an output sent binary carries its size there and
 * its bytes after the answer's JSON. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_dom.h"
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

/* A text that reads back as the same float (9 significant digits) or
 * double (17). One printf per number: searching for the shortest form
 * cost three times as much, and writing the answers of one-row requests
 * is on the replica's critical path (T1 in tests/bench/RESULTS.md). */
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
    jw_printf(w, single ? "%.9g" : "%.17g", v);
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

/* An output goes binary when asked, and when JSON cannot carry it: FP16,
 * or BYTES elements that are not UTF-8 text (a JSON string is). */
static bool goes_binary(const struct serve_tensor *t)
{
    if (t->binary == 1 || t->datatype == SERVE_TYPE_FP16) return true;
    if (t->datatype != SERVE_TYPE_BYTES) return false;
    const unsigned char *p = t->data;
    for (size_t at = 0; at + 4 <= t->bytes;) {
        uint32_t len = tensor_le32(p + at);
        if (!json_valid_utf8((const char *)p + at + 4, len)) return true;
        at += 4 + (size_t)len;
    }
    return false;
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
        if (goes_binary(t)) {
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
            if (goes_binary(outs[i])) jw_raw(&w, outs[i]->data, outs[i]->bytes);
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

/* A growing buffer for one input's decoded elements. */
struct elements {
    unsigned char *p;
    size_t len, cap, count;
};

/* Room for `more` bytes after what e holds. */
static bool reserve(struct elements *e, size_t more)
{
    if (e->len + more <= e->cap) return true;
    size_t cap = e->cap ? e->cap : 64;
    while (cap < e->len + more) cap *= 2;
    unsigned char *p = realloc(e->p, cap);
    if (!p) return false;
    e->p = p;
    e->cap = cap;
    return true;
}

static bool put(struct elements *e, const void *data, size_t len)
{
    if (!reserve(e, len)) return false;
    memcpy(e->p + e->len, data, len);
    e->len += len;
    return true;
}

static const char *kind_name(enum json_kind k)
{
    static const char *const names[] = {"null", "a boolean", "an integer", "an integer",
                                        "a number", "a string", "an array", "an object"};
    return names[k];
}

/* One JSON element as `datatype`; false with err naming the input. */
static bool put_element(struct elements *e, int datatype, json_value v, const char *name,
                        char *err, size_t errlen)
{
    enum json_kind kind = json_kind_of(v);
    size_t index = e->count;
    bool is_int = kind == JSON_INT64 || kind == JSON_UINT64;
    bool is_number = is_int || kind == JSON_DOUBLE;
    bool negative = kind == JSON_INT64 && json_int64(v) < 0;
    int64_t i64 = kind == JSON_INT64 ? json_int64(v) : INT64_MAX;
    uint64_t u64 = is_int && !negative ? json_uint64(v) : 0;
    /* A client that writes every number as a float (1000.0) means the
     * integer when it is one: taken as such within int64/uint64. */
    double d = kind == JSON_DOUBLE ? json_number(v) : 0;
    if (kind == JSON_DOUBLE && d == floor(d) && d >= -9223372036854775808.0 &&
        d < 18446744073709551616.0) {
        is_int = true;
        negative = d < 0;
        if (d < 9223372036854775808.0) {
            i64 = (int64_t)d;
            kind = JSON_INT64;
        } else {
            kind = JSON_UINT64;
        }
        u64 = negative ? 0 : (uint64_t)d;
    }
    union {
        uint8_t u8; uint16_t u16; uint32_t u32; uint64_t u64;
        int8_t i8; int16_t i16; int32_t i32; int64_t i64; float f; double d;
    } out;
    size_t size = serve_datatype_size(datatype);
    bool ok = true;
    const char *want = "an integer in its range";
    switch (datatype) {
    case SERVE_TYPE_BOOL:
        ok = kind == JSON_BOOL;
        out.u8 = ok && json_bool(v);
        want = "true or false";
        break;
    case SERVE_TYPE_UINT8: ok = is_int && !negative && u64 <= UINT8_MAX; out.u8 = (uint8_t)u64; break;
    case SERVE_TYPE_UINT16: ok = is_int && !negative && u64 <= UINT16_MAX; out.u16 = (uint16_t)u64; break;
    case SERVE_TYPE_UINT32: ok = is_int && !negative && u64 <= UINT32_MAX; out.u32 = (uint32_t)u64; break;
    case SERVE_TYPE_UINT64: ok = is_int && !negative; out.u64 = u64; break;
    /* A JSON_UINT64 is above INT64_MAX: i64 stays INT64_MAX, out of every
     * signed range but INT64's, which its kind rules out. */
    case SERVE_TYPE_INT8: ok = kind == JSON_INT64 && i64 >= INT8_MIN && i64 <= INT8_MAX; out.i8 = (int8_t)i64; break;
    case SERVE_TYPE_INT16: ok = kind == JSON_INT64 && i64 >= INT16_MIN && i64 <= INT16_MAX; out.i16 = (int16_t)i64; break;
    case SERVE_TYPE_INT32: ok = kind == JSON_INT64 && i64 >= INT32_MIN && i64 <= INT32_MAX; out.i32 = (int32_t)i64; break;
    case SERVE_TYPE_INT64: ok = kind == JSON_INT64; out.i64 = i64; break;
    case SERVE_TYPE_FP32: {
        double d = json_number(v);
        ok = is_number && isfinite((float)d); /* what rounds to FLT_MAX is in */
        out.f = (float)d;
        want = is_number ? "within float32 range" : "a number";
        break;
    }
    case SERVE_TYPE_FP64:
        out.d = json_number(v);
        ok = is_number;
        want = "a number";
        break;
    case SERVE_TYPE_BYTES: {
        size_t len;
        const char *str = json_string(v, &len);
        if (!str) {
            snprintf(err, errlen, "input '%s': element %zu is not a string (BYTES)", name, index);
            return false;
        }
        unsigned char prefix[4] = {(unsigned char)len, (unsigned char)(len >> 8),
                                   (unsigned char)(len >> 16), (unsigned char)(len >> 24)};
        e->count++;
        if (!put(e, prefix, 4) || !put(e, str, len)) {
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
        char *text = is_number ? json_text(v) : NULL;
        if (text && strlen(text) > 40) strcpy(text + 37, "...");
        snprintf(err, errlen, "input '%s': element %zu (%s) is not %s for %s", name, index,
                 text ? text : kind_name(kind), want, serve_datatype_name(datatype));
        free(text);
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
static bool flatten(struct elements *e, int datatype, json_value data, const char *name,
                    char *err, size_t errlen)
{
    if (json_kind_of(data) != JSON_ARRAY) return put_element(e, datatype, data, name, err, errlen);
    json_iter it;
    json_value v;
    for (bool more = json_first(data, &it, &v); more; more = json_next(&it, &v))
        if (!flatten(e, datatype, v, name, err, errlen)) return false;
    return true;
}

/* Every array at depth d has shape[d] entries, and only depth `rank`
 * holds numbers. */
static bool rectangular(json_value v, const int64_t *shape, size_t d, size_t rank)
{
    bool array = json_kind_of(v) == JSON_ARRAY;
    if (d == rank) return !array;
    if (!array || json_size(v) != (size_t)shape[d]) return false;
    json_iter it;
    json_value e;
    for (bool more = json_first(v, &it, &e); more; more = json_next(&it, &e))
        if (!rectangular(e, shape, d + 1, rank)) return false;
    return true;
}

static bool read_shape(const json_value *shape, struct serve_tensor *t, char *err, size_t errlen)
{
    if (!shape || json_kind_of(*shape) != JSON_ARRAY) {
        snprintf(err, errlen, "input '%s': \"shape\" must be an array of sizes", t->name);
        return false;
    }
    size_t rank = json_size(*shape);
    if (rank > SERVE_MAX_RANK) {
        snprintf(err, errlen, "input '%s': rank %zu is over %d", t->name, rank, SERVE_MAX_RANK);
        return false;
    }
    json_iter it;
    json_value d;
    size_t i = 0;
    for (bool more = json_first(*shape, &it, &d); more; more = json_next(&it, &d), i++) {
        if (json_kind_of(d) != JSON_INT64 || json_int64(d) < 0) {
            snprintf(err, errlen, "input '%s': shape entry %zu is not a size (0 or more)", t->name,
                     i);
            return false;
        }
        t->shape[i] = json_int64(d);
    }
    t->rank = rank;
    if (!tensor_shape_count(t->shape, rank, &t->count) ||
        (t->count && t->count > SIZE_MAX / 16)) {
        snprintf(err, errlen, "input '%s': shape is too large", t->name);
        return false;
    }
    return true;
}

/* A member that must be a string, copied (NULL: absent or not a string). */
static char *string_member(json_value obj, const char *key)
{
    json_value v;
    size_t len;
    const char *s = json_member(obj, key, &v) ? json_string(v, &len) : NULL;
    return s ? strndup(s, len) : NULL;
}

/* One entry of "inputs"; binary data taken from *binary on. */
static bool read_input(json_value in, size_t index, struct serve_tensor *t, const char **binary,
                       size_t *binary_left, char *err, size_t errlen)
{
    json_value shape, data, params, size;
    if (json_kind_of(in) != JSON_OBJECT || !(t->name = string_member(in, "name"))) {
        snprintf(err, errlen, "input %zu: an object with a \"name\" string is required", index);
        return false;
    }
    char *datatype = string_member(in, "datatype");
    if (!datatype) {
        snprintf(err, errlen, "input '%s': \"datatype\" is required", t->name);
        return false;
    }
    t->datatype = serve_datatype_from_name(datatype);
    if (!t->datatype)
        snprintf(err, errlen, "input '%s': unknown datatype \"%s\" (BOOL, UINT8..UINT64, "
                 "INT8..INT64, FP16, FP32, FP64 or BYTES)", t->name, datatype);
    free(datatype);
    if (!t->datatype) return false;
    if (!read_shape(json_member(in, "shape", &shape) ? &shape : NULL, t, err, errlen))
        return false;
    bool has_size = json_member(in, "parameters", &params) &&
                    json_kind_of(params) == JSON_OBJECT &&
                    json_member(params, "binary_data_size", &size);
    if (has_size && json_member(in, "data", &data)) {
        snprintf(err, errlen, "input '%s': both \"data\" and parameters.binary_data_size: "
                 "send one", t->name);
        return false;
    }
    if (has_size) {
        if (json_kind_of(size) != JSON_INT64 || json_int64(size) < 0) {
            snprintf(err, errlen, "input '%s': binary_data_size must be a size", t->name);
            return false;
        }
        uint64_t n = (uint64_t)json_int64(size);
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
    } else if (json_member(in, "data", &data)) {
        struct elements e = {0};
        /* Room for what the shape promises, within reason: a body of at
         * most --max-body holds fewer elements than half its bytes. */
        size_t size = serve_datatype_size(t->datatype), want = t->count * (size ? size : 8);
        bool ok = reserve(&e, want <= (64u << 20) ? want : 0);
        if (!ok) snprintf(err, errlen, "out of memory");
        ok = ok && flatten(&e, t->datatype, data, t->name, err, errlen);
        if (ok && e.count != t->count) ok = false;
        /* Flat data is one array of every element; nested data must nest
         * as the shape does, level by level. */
        json_iter it;
        json_value first;
        if (ok && t->rank > 1 && json_first(data, &it, &first) &&
            json_kind_of(first) == JSON_ARRAY && !rectangular(data, t->shape, 0, t->rank)) {
            char shape_text[128];
            tensor_shape_text(t->shape, t->rank, shape_text, sizeof shape_text);
            snprintf(err, errlen, "input '%s': nested data does not nest as shape %s (send it "
                     "flat, or nested level by level)", t->name, shape_text);
            ok = false;
        }
        if (!ok && !err[0]) {
            char shape_text[128];
            tensor_shape_text(t->shape, t->rank, shape_text, sizeof shape_text);
            snprintf(err, errlen, "input '%s': shape %s holds %zu elements, data has %zu",
                     t->name, shape_text, t->count, e.count);
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

static bool read_outputs(struct tensor_set *ts, json_value outputs, char *err, size_t errlen)
{
    if (json_kind_of(outputs) != JSON_ARRAY) {
        snprintf(err, errlen, "\"outputs\" must be an array");
        return false;
    }
    size_t n = json_size(outputs);
    ts->wanted = calloc(n ? n : 1, sizeof *ts->wanted);
    if (!ts->wanted) return false;
    json_iter it;
    json_value o;
    size_t i = 0;
    for (bool more = json_first(outputs, &it, &o); more; more = json_next(&it, &o), i++) {
        if (ts->wanted_count == n) { /* simdjson's count saturates at 2^24 - 1 */
            snprintf(err, errlen, "too many outputs");
            return false;
        }
        struct tensor_request_output *w = &ts->wanted[ts->wanted_count];
        if (json_kind_of(o) != JSON_OBJECT || !(w->name = string_member(o, "name"))) {
            snprintf(err, errlen, "output %zu: an object with a \"name\" string is required", i);
            return false;
        }
        json_value params, binary;
        int as_binary = -1;
        if (json_member(o, "parameters", &params) && json_member(params, "binary_data", &binary))
            as_binary = json_bool(binary) ? 1 : 0;
        if (!tensor_want_output(ts, as_binary, err, errlen)) return false;
    }
    return true;
}

static bool read_parameters(struct tensor_set *ts, json_value params, char *err, size_t errlen)
{
    if (json_kind_of(params) != JSON_OBJECT) {
        snprintf(err, errlen, "\"parameters\" must be an object");
        return false;
    }
    json_iter it;
    const char *key;
    size_t klen;
    json_value v;
    for (bool more = json_first_member(params, &it, &key, &klen, &v); more;
         more = json_next_member(&it, &key, &klen, &v)) {
        char *k = strndup(key, klen), *text;
        size_t len;
        const char *str = json_string(v, &len);
        text = str ? strndup(str, len) : json_text(v);
        bool ok = k && text && tensor_set_param(ts, k, text);
        if (ok && strcmp(k, "binary_data_output") == 0) ts->binary_output = json_bool(v);
        free(k);
        free(text);
        if (!ok) return false;
    }
    return true;
}

static bool read_document(struct tensor_set *ts, json_value doc, const char *binary,
                          size_t binary_len, char *err, size_t errlen)
{
    if (json_kind_of(doc) != JSON_OBJECT) {
        snprintf(err, errlen, "the inference request must be a JSON object");
        return false;
    }
    json_value id, params, inputs, outputs;
    if (json_member(doc, "id", &id)) {
        if (json_kind_of(id) != JSON_STRING) {
            snprintf(err, errlen, "\"id\" must be a string");
            return false;
        }
        if (!(ts->id = string_member(doc, "id"))) return false;
    }
    if (json_member(doc, "parameters", &params) && !read_parameters(ts, params, err, errlen))
        return false;
    if (!json_member(doc, "inputs", &inputs) || json_kind_of(inputs) != JSON_ARRAY) {
        snprintf(err, errlen, "\"inputs\" (an array of tensors) is required");
        return false;
    }
    size_t n = json_size(inputs);
    ts->inputs = calloc(n ? n : 1, sizeof *ts->inputs);
    if (!ts->inputs) return false;
    size_t binary_left = binary_len;
    json_iter it;
    json_value in;
    for (bool more = json_first(inputs, &it, &in); more; more = json_next(&it, &in)) {
        if (ts->input_count == n) { /* simdjson's count saturates at 2^24 - 1 */
            snprintf(err, errlen, "too many inputs");
            return false;
        }
        size_t i = ts->input_count++;
        if (!read_input(in, i, &ts->inputs[i], &binary, &binary_left, err, errlen)) return false;
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
    if (json_member(doc, "outputs", &outputs) && !read_outputs(ts, outputs, err, errlen))
        return false;
    return true;
}

bool oip_json_decode(struct tensor_set *ts, const char *json, size_t json_len, const char *binary,
                     size_t binary_len, char *err, size_t errlen)
{
    json_value doc;
    if (!json_parse(json, json_len, &doc, err, errlen)) return false;
    /* binary is NULL for a plain JSON request: binary_data_size is then an
     * error; for a binary one it is the (possibly empty) rest of the body. */
    bool ok = read_document(ts, doc, binary, binary_len, err, errlen);
    if (!ok && !err[0]) snprintf(err, errlen, "out of memory");
    return ok;
}

/* A bare row: nested arrays of numbers, rectangular, as one FP32 input. */
bool row_json_decode(struct tensor_set *ts, const char *json, size_t len, char *err,
                     size_t errlen)
{
    json_value doc;
    if (!json_parse(json, len, &doc, err, errlen)) return false;
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
    json_value level = doc;
    while (ok && json_kind_of(level) == JSON_ARRAY) {
        if (t->rank == SERVE_MAX_RANK) {
            snprintf(err, errlen, "a row nested deeper than %d levels", SERVE_MAX_RANK);
            ok = false;
            break;
        }
        t->shape[t->rank++] = (int64_t)json_size(level);
        json_iter it;
        if (!json_first(level, &it, &level)) break;
    }
    if (ok && !tensor_shape_count(t->shape, t->rank, &t->count)) ok = false;
    struct elements e = {0};
    if (ok && t->rank == 0) {
        snprintf(err, errlen, "a row must be a JSON array of numbers");
        ok = false;
    }
    if (ok && !reserve(&e, t->count <= len ? t->count * sizeof(float) : 0)) {
        snprintf(err, errlen, "out of memory");
        ok = false;
    }
    if (ok) ok = flatten(&e, SERVE_TYPE_FP32, doc, "input", err, errlen);
    /* Rectangular: each level's arrays as long as the first one's (a
     * ragged row can flatten to the right count in the wrong places). */
    if (ok && (e.count != t->count || !rectangular(doc, t->shape, 0, t->rank))) ok = false;
    if (!ok) {
        if (!err[0])
            snprintf(err, errlen, "a row must be a rectangular array of numbers (expected %zu "
                     "elements by its first entries, got %zu)", t->count, e.count);
        free(e.p);
        return false;
    }
    t->owned = e.p ? e.p : malloc(1);
    t->data = t->owned;
    t->bytes = e.len;
    return t->owned != NULL;
}
