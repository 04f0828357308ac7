/* rows.c - input and output rows of the torch plugin (see rows.h). */
#include "rows.h"

#include <errno.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_bounds.h"

struct parser {
    const char *p, *end;
    struct row *row;
    size_t cap;
    int leaf_depth;    /* depth of the numbers; -1 until the first */
    bool set[TORCH_SHIM_MAX_RANK];
    char *err;
    size_t errlen;
};

static void skip_space(struct parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t'))
        ps->p++;
}

static bool push(struct parser *ps, float v)
{
    struct row *r = ps->row;
    if (r->count == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 256;
        float *grown = realloc(r->data, cap * sizeof *grown);
        if (!grown) return false;
        r->data = grown;
        ps->cap = cap;
    }
    r->data[r->count++] = v;
    return true;
}

static bool fail(struct parser *ps, const char *why)
{
    snprintf(ps->err, ps->errlen, "%s", why);
    return false;
}

static bool parse_value(struct parser *ps, int depth)
{
    skip_space(ps);
    if (ps->p >= ps->end) return fail(ps, "body ends inside the array");
    if (*ps->p != '[') {
        if (depth == 0) return fail(ps, "body is not a JSON array of numbers");
        char number[64];
        size_t n = 0;
        while (ps->p < ps->end && n < sizeof number - 1 && strchr("+-0123456789.eE", *ps->p))
            number[n++] = *ps->p++;
        number[n] = '\0';
        char *end;
        errno = 0;
        double v = n ? strtod(number, &end) : 0;
        if (!n || *end || (errno && errno != ERANGE)) return fail(ps, "body is not a JSON array of numbers");
        if (!isfinite((float)v)) return fail(ps, "a number is out of float32 range");
        if (ps->leaf_depth < 0) ps->leaf_depth = depth;
        if (ps->leaf_depth != depth) return fail(ps, "the array is ragged: numbers at different depths");
        return push(ps, (float)v) || fail(ps, "out of memory");
    }
    if (depth >= TORCH_SHIM_MAX_RANK) return fail(ps, "the array is nested too deep");
    ps->p++;
    int64_t items = 0;
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
    } else {
        for (;;) {
            if (!parse_value(ps, depth + 1)) return false;
            items++;
            skip_space(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == ']') {
                ps->p++;
                break;
            }
            return fail(ps, "body is not a JSON array of numbers");
        }
    }
    struct row *r = ps->row;
    if (!ps->set[depth]) {
        ps->set[depth] = true;
        r->shape[depth] = items;
        if (depth + 1 > r->rank) r->rank = depth + 1;
    } else if (r->shape[depth] != items) {
        return fail(ps, "the array is ragged: rows of different lengths");
    }
    return true;
}

bool row_parse_json(const char *body, size_t len, struct row *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    struct parser ps = {.p = body, .end = body + len, .row = out, .leaf_depth = -1,
                        .err = err, .errlen = errlen};
    bool ok = parse_value(&ps, 0);
    skip_space(&ps);
    if (ok && ps.p != ps.end) ok = fail(&ps, "text after the array");
    if (ok && out->count == 0) ok = fail(&ps, "the array holds no numbers");
    if (ok && ps.leaf_depth != out->rank) ok = fail(&ps, "the array is ragged");
    if (!ok) row_free(out);
    return ok;
}

bool row_parse_msgpack(const char *body, size_t len, struct row *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    size_t off = 0;
    bool ok = mp_bounded(body, len, NULL) &&
              msgpack_unpack_next(&msg, body, len, &off) == MSGPACK_UNPACK_SUCCESS &&
              msg.data.type == MSGPACK_OBJECT_ARRAY && msg.data.via.array.size > 0;
    if (ok) {
        uint32_t n = msg.data.via.array.size;
        out->data = malloc(n * sizeof *out->data);
        ok = out->data != NULL;
        for (uint32_t i = 0; ok && i < n; i++) {
            const msgpack_object *o = &msg.data.via.array.ptr[i];
            if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
                ok = isfinite(out->data[i] = (float)o->via.f64);
            else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                out->data[i] = (float)o->via.u64;
            else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                out->data[i] = (float)o->via.i64;
            else
                ok = false;
        }
        out->count = n;
        out->shape[0] = n;
        out->rank = 1;
    }
    msgpack_unpacked_destroy(&msg);
    if (!ok) {
        snprintf(err, errlen, "body is not a msgpack array of finite float32 numbers");
        row_free(out);
    }
    return ok;
}

void row_free(struct row *r)
{
    free(r->data);
    memset(r, 0, sizeof *r);
}

void shape_format(const int64_t *shape, int rank, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < rank && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < len) snprintf(buf + n, len - n, "]");
}

bool shape_parse(const char *text, int64_t *shape, int *rank)
{
    *rank = 0;
    const char *p = text;
    while (*p) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v <= 0 || *rank == TORCH_SHIM_MAX_RANK) return false;
        shape[(*rank)++] = v;
        p = end;
        if (*p == ',') p++;
        else if (*p) return false;
    }
    return *rank > 0;
}

struct text {
    char *buf;
    size_t len, cap;
};

static bool put(struct text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->cap + n + 64) * 2;
        char *grown = realloc(t->buf, cap);
        if (!grown) return false;
        t->buf = grown;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    return true;
}

static bool write_level(struct text *t, const float **data, const int64_t *shape, int rank)
{
    bool ok = put(t, "[", 1);
    for (int64_t i = 0; ok && i < shape[0]; i++) {
        if (i) ok = put(t, ", ", 2);
        if (rank > 1) {
            ok = ok && write_level(t, data, shape + 1, rank - 1);
        } else {
            /* JSON has no NaN or infinity: a model that gives one gets null,
             * so that the answer stays JSON. */
            char number[32];
            float v = *(*data)++;
            int n = isfinite(v) ? snprintf(number, sizeof number, "%.9g", (double)v)
                                : snprintf(number, sizeof number, "null");
            ok = ok && put(t, number, (size_t)n);
        }
    }
    return ok && put(t, "]", 1);
}

char *row_to_json(const float *data, const int64_t *shape, int rank, size_t *len)
{
    struct text t = {0};
    int64_t scalar = 1;
    bool ok = rank > 0 ? write_level(&t, &data, shape, rank)
                       : write_level(&t, &data, &scalar, 1);
    if (!ok) {
        free(t.buf);
        return NULL;
    }
    *len = t.len;
    return t.buf;
}

char *row_to_msgpack(const float *data, size_t count, size_t *len)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, count);
    for (size_t i = 0; i < count; i++) msgpack_pack_float(&pk, data[i]);
    *len = sbuf.size;
    return sbuf.data; /* sbuffer memory is malloc'd; the caller frees it */
}
