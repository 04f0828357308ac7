/* fuzz_tensors.c - libFuzzer target for the tensor codecs: the bytes are a
 * request body, decoded as an Open Inference Protocol JSON document, as one
 * with binary data (the first two bytes, little-endian, give the JSON
 * part's length), as an application/msgpack body and as a bare JSON row.
 * What decodes must encode and decode back to the same tensors. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor.h"

static void same(const struct serve_tensor *a, const struct serve_tensor *b)
{
    if (strcmp(a->name, b->name) != 0 || a->datatype != b->datatype || a->rank != b->rank ||
        memcmp(a->shape, b->shape, a->rank * sizeof a->shape[0]) != 0 || a->bytes != b->bytes ||
        (a->bytes && memcmp(a->data, b->data, a->bytes) != 0)) {
        fprintf(stderr, "fuzz_tensors: tensor '%s' changed on the way back\n", a->name);
        abort();
    }
}

/* The inputs as outputs (borrowing their data), encoded as OIP and read
 * back: binary when the source was, JSON otherwise. */
static void round_trip_oip(struct tensor_set *ts, bool binary)
{
    const struct serve_tensor **outs = calloc(ts->input_count + 1, sizeof *outs);
    struct serve_tensor *copies = calloc(ts->input_count + 1, sizeof *copies);
    if (!outs || !copies) abort();
    for (size_t i = 0; i < ts->input_count; i++) {
        copies[i] = ts->inputs[i];
        copies[i].owned = NULL;
        /* FP16 has no JSON form: the encoder sends it binary anyway. */
        copies[i].binary = binary;
        outs[i] = &copies[i];
    }
    char *body;
    size_t len, json_len;
    char *id = ts->id; /* an id could hold the text the rename below looks for */
    ts->id = NULL;
    bool has_binary;
    bool encoded = oip_json_encode(ts, outs, ts->input_count, "m", "", &body, &len, &json_len,
                                   &has_binary);
    ts->id = id;
    if (!encoded) abort();
    /* The answer's outputs become a request's inputs: rename the key. */
    char *doc = malloc(len + 1);
    if (!doc) abort();
    memcpy(doc, body, len);
    char *key = memmem(doc, json_len, "\"outputs\":", 10); /* the data after may hold NULs */
    if (!key) abort();
    memcpy(key, "\"inputs\": ", 10);
    struct tensor_set back = {0};
    char err[512] = "";
    if (!oip_json_decode(&back, doc, json_len, has_binary ? doc + json_len : NULL,
                         len - json_len, err, sizeof err)) {
        fprintf(stderr, "fuzz_tensors: an encoded answer did not decode: %s\n", err);
        abort();
    }
    if (back.input_count != ts->input_count) abort();
    for (size_t i = 0; i < ts->input_count; i++) same(&ts->inputs[i], &back.inputs[i]);
    for (size_t i = 0; i < back.input_count; i++) tensor_clear(&back.inputs[i]);
    free(back.inputs);
    for (size_t i = 0; i < 2 * back.param_count; i++) free(back.params[i]);
    free(back.params);
    free(back.id);
    free(doc);
    free(body);
    free(copies);
    free(outs);
}

static struct tensor_set *fresh(void)
{
    struct tensor_set *ts = calloc(1, sizeof *ts);
    if (!ts) abort();
    return ts;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    char err[512];
    struct tensor_set *ts = fresh();
    if (oip_json_decode(ts, text, size, NULL, 0, err, sizeof err)) round_trip_oip(ts, false);
    tensor_set_free(ts);

    if (size >= 2) {
        size_t header = (size_t)data[0] | (size_t)data[1] << 8;
        if (header > size - 2) header = size - 2;
        ts = fresh();
        if (oip_json_decode(ts, text + 2, header, text + 2 + header, size - 2 - header, err,
                            sizeof err))
            round_trip_oip(ts, true);
        tensor_set_free(ts);
    }

    ts = fresh();
    if (tensor_msgpack_decode(ts, text, size, err, sizeof err)) {
        char *body;
        size_t len;
        const struct serve_tensor *first = ts->input_count ? &ts->inputs[0] : NULL;
        if (ts->wire == WIRE_ROW_MSGPACK && first) {
            if (!row_msgpack_encode(first, &body, &len)) abort();
            struct tensor_set *back = fresh();
            if (!tensor_msgpack_decode(back, body, len, err, sizeof err)) abort();
            same(first, &back->inputs[0]);
            tensor_set_free(back);
            free(body);
        }
    }
    tensor_set_free(ts);

    ts = fresh();
    if (row_json_decode(ts, text, size, err, sizeof err)) {
        char *body;
        size_t len;
        if (!row_json_encode(&ts->inputs[0], &body, &len)) abort();
        struct tensor_set *back = fresh();
        if (!row_json_decode(back, body, len, err, sizeof err)) {
            fprintf(stderr, "fuzz_tensors: an encoded row did not decode: %s\n", err);
            abort();
        }
        /* An empty nested row ([[]]) comes back as []: compare elements. */
        if (ts->inputs[0].count && ts->inputs[0].rank)
            same(&ts->inputs[0], &back->inputs[0]);
        tensor_set_free(back);
        free(body);
    }
    tensor_set_free(ts);
    return 0;
}
