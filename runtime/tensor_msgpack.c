/* tensor_msgpack.c - tensors in application/msgpack bodies.
 *
 * A request is either a map, the msgpack twin of an OIP document:
 *   {"id": STR, "parameters": {KEY: STR|NUMBER|BOOL},
 *    "inputs": [{"name": STR, "datatype": STR, "shape": [INT...],
 *                "data": BIN}],      (the binary extension's layout)
 *    "outputs": [STR...]}            (optional: the outputs to send)
 * answered {"id", "outputs": [{"name", "datatype", "shape", "data": BIN}]};
 * or a bare row, an array of numbers: one FP32 input named "input" of
 * shape [n], answered with the first output as an array of numbers. */
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp.h"
#include "mp_bounds.h"
#include "tensor.h"

static bool read_row(struct tensor_set *ts, const msgpack_object *array, char *err, size_t errlen)
{
    ts->wire = WIRE_ROW_MSGPACK;
    ts->inputs = calloc(1, sizeof *ts->inputs);
    if (!ts->inputs) return false;
    ts->input_count = 1;
    struct serve_tensor *t = ts->inputs;
    uint32_t n = array->via.array.size;
    t->name = strdup("input");
    t->datatype = SERVE_TYPE_FP32;
    t->rank = 1;
    t->shape[0] = n;
    t->count = n;
    t->bytes = (size_t)n * sizeof(float);
    float *data = malloc(t->bytes ? t->bytes : 1);
    t->owned = data;
    t->data = data;
    if (!t->name || !data) return false;
    for (uint32_t i = 0; i < n; i++) {
        double v;
        if (!mp_as_double(&array->via.array.ptr[i], &v) || !isfinite((float)v)) {
            snprintf(err, errlen, "row element %u is not a finite float32 number", i);
            return false;
        }
        data[i] = (float)v;
    }
    return true;
}

static bool read_input(const msgpack_object *in, size_t index, struct serve_tensor *t, char *err,
                       size_t errlen)
{
    char *datatype = NULL;
    if (!mp_as_str(mp_get(in, "name"), &t->name)) {
        snprintf(err, errlen, "input %zu: a map with a \"name\" string is required", index);
        return false;
    }
    if (!mp_as_str(mp_get(in, "datatype"), &datatype)) {
        snprintf(err, errlen, "input '%s': \"datatype\" is required", t->name);
        return false;
    }
    t->datatype = serve_datatype_from_name(datatype);
    if (!t->datatype) snprintf(err, errlen, "input '%s': unknown datatype \"%s\"", t->name, datatype);
    free(datatype);
    if (!t->datatype) return false;
    const msgpack_object *shape = mp_get(in, "shape"), *data = mp_get(in, "data");
    if (!shape || shape->type != MSGPACK_OBJECT_ARRAY || shape->via.array.size > SERVE_MAX_RANK) {
        snprintf(err, errlen, "input '%s': \"shape\" must be an array of at most %d sizes",
                 t->name, SERVE_MAX_RANK);
        return false;
    }
    t->rank = shape->via.array.size;
    for (size_t i = 0; i < t->rank; i++) {
        uint64_t d;
        if (!mp_as_uint(&shape->via.array.ptr[i], &d) || d > INT64_MAX) {
            snprintf(err, errlen, "input '%s': shape entry %zu is not a size", t->name, i);
            return false;
        }
        t->shape[i] = (int64_t)d;
    }
    if (!tensor_shape_count(t->shape, t->rank, &t->count)) {
        snprintf(err, errlen, "input '%s': shape is too large", t->name);
        return false;
    }
    if (!data || data->type != MSGPACK_OBJECT_BIN) {
        snprintf(err, errlen, "input '%s': \"data\" must be binary (bin), row-major, "
                 "little-endian", t->name);
        return false;
    }
    if (!tensor_set_data(t, data->via.bin.ptr, data->via.bin.size)) return false;
    return tensor_check_size(t, err, errlen);
}

static bool read_map(struct tensor_set *ts, const msgpack_object *map, char *err, size_t errlen)
{
    ts->wire = WIRE_MSGPACK;
    const msgpack_object *id = mp_get(map, "id"), *params = mp_get(map, "parameters"),
                         *inputs = mp_get(map, "inputs"), *outputs = mp_get(map, "outputs");
    if (id && !mp_as_str(id, &ts->id)) {
        snprintf(err, errlen, "\"id\" must be a string");
        return false;
    }
    if (params && params->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < params->via.map.size; i++) {
            const msgpack_object_kv *kv = &params->via.map.ptr[i];
            char *key = NULL, *text = NULL, num[64];
            double d;
            bool b;
            if (!mp_as_str(&kv->key, &key)) continue;
            if (mp_as_str(&kv->val, &text)) {
            } else if (mp_as_bool(&kv->val, &b)) {
                text = strdup(b ? "true" : "false");
            } else if (kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                snprintf(num, sizeof num, "%llu", (unsigned long long)kv->val.via.u64);
                text = strdup(num);
            } else if (kv->val.type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
                snprintf(num, sizeof num, "%lld", (long long)kv->val.via.i64);
                text = strdup(num);
            } else if (mp_as_double(&kv->val, &d)) {
                snprintf(num, sizeof num, "%.17g", d);
                text = strdup(num);
            }
            bool ok = !text || tensor_set_param(ts, key, text);
            free(key);
            free(text);
            if (!ok) return false;
        }
    }
    if (!inputs || inputs->type != MSGPACK_OBJECT_ARRAY) {
        snprintf(err, errlen, "\"inputs\" (an array of tensors) is required");
        return false;
    }
    uint32_t n = inputs->via.array.size;
    ts->inputs = calloc(n ? n : 1, sizeof *ts->inputs);
    if (!ts->inputs) return false;
    for (uint32_t i = 0; i < n; i++) {
        ts->input_count++;
        if (!read_input(&inputs->via.array.ptr[i], i, &ts->inputs[i], err, errlen)) return false;
    }
    if (outputs && outputs->type == MSGPACK_OBJECT_ARRAY) {
        uint32_t m = outputs->via.array.size;
        ts->wanted = calloc(m ? m : 1, sizeof *ts->wanted);
        if (!ts->wanted) return false;
        for (uint32_t i = 0; i < m; i++) {
            struct tensor_request_output *w = &ts->wanted[ts->wanted_count];
            if (!mp_as_str(&outputs->via.array.ptr[i], &w->name)) {
                snprintf(err, errlen, "output %u: a name (string) is required", i);
                return false;
            }
            if (!tensor_want_output(ts, -1, err, errlen)) return false;
        }
    }
    return true;
}

bool tensor_msgpack_decode(struct tensor_set *ts, const char *body, size_t len, char *err,
                           size_t errlen)
{
    size_t used = 0;
    ts->wire = WIRE_MSGPACK;
    if (!mp_bounded(body, len, &used) || used != len) {
        snprintf(err, errlen, "malformed msgpack body");
        return false;
    }
    msgpack_unpacked doc;
    msgpack_unpacked_init(&doc);
    bool ok = false;
    if (msgpack_unpack_next(&doc, body, len, NULL) != MSGPACK_UNPACK_SUCCESS)
        snprintf(err, errlen, "malformed msgpack body");
    else if (doc.data.type == MSGPACK_OBJECT_ARRAY)
        ok = read_row(ts, &doc.data, err, errlen);
    else if (doc.data.type == MSGPACK_OBJECT_MAP)
        ok = read_map(ts, &doc.data, err, errlen);
    else
        snprintf(err, errlen, "a msgpack tensor body is a map with \"inputs\" or an array of "
                 "numbers");
    if (!ok && !err[0]) snprintf(err, errlen, "out of memory");
    msgpack_unpacked_destroy(&doc);
    return ok;
}

static bool finish(msgpack_sbuffer *sb, char **body, size_t *len)
{
    if (!sb->data) {
        *body = malloc(1);
        *len = 0;
        return *body != NULL;
    }
    *body = sb->data;
    *len = sb->size;
    return true;
}

bool tensor_msgpack_encode(const struct tensor_set *ts, const struct serve_tensor *const *outs,
                           size_t n, char **body, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, ts->id ? 2 : 1);
    if (ts->id) {
        mp_pack_key(&pk, "id");
        mp_pack_str(&pk, ts->id);
    }
    mp_pack_key(&pk, "outputs");
    msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n; i++) {
        const struct serve_tensor *t = outs[i];
        msgpack_pack_map(&pk, 4);
        mp_pack_key(&pk, "name");
        mp_pack_str(&pk, t->name);
        mp_pack_key(&pk, "datatype");
        mp_pack_str(&pk, serve_datatype_name(t->datatype));
        mp_pack_key(&pk, "shape");
        msgpack_pack_array(&pk, t->rank);
        for (size_t d = 0; d < t->rank; d++) msgpack_pack_int64(&pk, t->shape[d]);
        mp_pack_key(&pk, "data");
        msgpack_pack_bin(&pk, t->bytes);
        msgpack_pack_bin_body(&pk, t->data, t->bytes);
    }
    return finish(&sb, body, len);
}

bool row_msgpack_encode(const struct serve_tensor *t, char **body, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, t->count);
    const unsigned char *p = t->data;
    size_t size = serve_datatype_size(t->datatype), at = 0;
    for (size_t i = 0; i < t->count; i++) {
        const unsigned char *e = p + i * size;
        switch (t->datatype) {
        case SERVE_TYPE_BOOL: if (*e) msgpack_pack_true(&pk); else msgpack_pack_false(&pk); break;
        case SERVE_TYPE_UINT8: msgpack_pack_uint8(&pk, *e); break;
        case SERVE_TYPE_UINT16: { uint16_t v; memcpy(&v, e, 2); msgpack_pack_uint16(&pk, v); break; }
        case SERVE_TYPE_UINT32: { uint32_t v; memcpy(&v, e, 4); msgpack_pack_uint32(&pk, v); break; }
        case SERVE_TYPE_UINT64: { uint64_t v; memcpy(&v, e, 8); msgpack_pack_uint64(&pk, v); break; }
        case SERVE_TYPE_INT8: msgpack_pack_int8(&pk, (int8_t)*e); break;
        case SERVE_TYPE_INT16: { int16_t v; memcpy(&v, e, 2); msgpack_pack_int16(&pk, v); break; }
        case SERVE_TYPE_INT32: { int32_t v; memcpy(&v, e, 4); msgpack_pack_int32(&pk, v); break; }
        case SERVE_TYPE_INT64: { int64_t v; memcpy(&v, e, 8); msgpack_pack_int64(&pk, v); break; }
        case SERVE_TYPE_FP32: { float v; memcpy(&v, e, 4); msgpack_pack_float(&pk, v); break; }
        case SERVE_TYPE_FP64: { double v; memcpy(&v, e, 8); msgpack_pack_double(&pk, v); break; }
        case SERVE_TYPE_BYTES: {
            uint32_t l = tensor_le32(p + at);
            msgpack_pack_bin(&pk, l);
            msgpack_pack_bin_body(&pk, p + at + 4, l);
            at += 4 + l;
            break;
        }
        default: { uint16_t v; memcpy(&v, e, 2); msgpack_pack_uint16(&pk, v); break; } /* FP16 bits */
        }
    }
    return finish(&sb, body, len);
}
