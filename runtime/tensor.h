/* tensor.h - the runtime side of the SDK's tensors: a request's decoded
 * inputs, the outputs a plugin adds, and the wire forms both travel in.
 *
 * A request's tensors live in one tensor_set, made on the first read
 * (serve_request_input_count and friends, or tensor_admit before
 * handle_batch) in the process that runs the plugin, and freed with the
 * request. The codecs (oip_json.c, tensor_msgpack.c) fill and read it; this
 * file owns the types, the SDK functions and the choice of codec. */
#ifndef SERVE_RUNTIME_TENSOR_H
#define SERVE_RUNTIME_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serve/plugin.h"

/* How a request's body carries its tensors, and so how its answer goes. */
enum tensor_wire {
    WIRE_NONE,        /* not decoded yet, or no body: answers go as OIP JSON */
    WIRE_OIP_JSON,
    WIRE_OIP_BINARY,  /* Inference-Header-Content-Length */
    WIRE_MSGPACK,     /* application/msgpack map */
    WIRE_ROW_JSON,    /* a bare JSON array of numbers */
    WIRE_ROW_MSGPACK, /* a bare msgpack array of numbers */
};

struct serve_tensor {
    char *name;
    int datatype;
    size_t rank;
    int64_t shape[SERVE_MAX_RANK];
    size_t count;     /* elements: the product of shape */
    const void *data; /* owned or borrowed from the body (aligned) */
    size_t bytes;
    void *owned;      /* malloc'd data, or NULL when borrowed */
    int binary;       /* outputs: -1 as the request says, 0 JSON, 1 binary */
};

/* An output the request asked for by name (OIP "outputs"). */
struct tensor_request_output {
    char *name;
    int binary; /* -1: not said (binary_data_output decides), 0, 1 */
};

struct tensor_set {
    enum tensor_wire wire;
    char *error;                 /* why the body did not decode; NULL: it did */
    struct serve_tensor *inputs;
    size_t input_count;
    char **params;               /* key, text value, key, value ... */
    size_t param_count;
    char *id;                    /* the OIP request id, echoed */
    struct tensor_request_output *wanted;
    size_t wanted_count;         /* 0: every output */
    bool binary_output;          /* binary_data_output */
    struct serve_tensor *outputs;
    size_t output_count, output_cap;
};

/* The request's set, decoding its body on the first call. Never NULL but
 * when out of memory. */
struct tensor_set *tensor_set_of(serve_request *req);
void tensor_set_free(struct tensor_set *ts);

/* Before handle_batch, for a replica that declared inputs: decodes every
 * request, answers those whose body does not decode with 400 (they stay
 * in the batch as answered requests), and writes the others to kept[] in
 * order. Returns how many were kept. Requests must be in_batch. */
size_t tensor_admit(serve_request *const *reqs, size_t n, serve_request **kept);

/* Helpers for the codecs. */
/* Takes the name just read into wanted[wanted_count] (malloc'd) as one
 * more requested output; false (the name freed) with a message when it
 * was asked for already. */
bool tensor_want_output(struct tensor_set *ts, int binary, char *err, size_t errlen);
bool tensor_set_param(struct tensor_set *ts, const char *key, const char *value);
/* The element count of a shape; false when a dimension is negative or the
 * product overflows. */
bool tensor_shape_count(const int64_t *shape, size_t rank, size_t *count);
/* A BYTES element's 4-byte little-endian length at p. */
static inline uint32_t tensor_le32(const void *at)
{
    const unsigned char *p = at;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
/* "[2, 3]": a shape as messages show it. */
void tensor_shape_text(const int64_t *shape, size_t rank, char *out, size_t outlen);
/* The number of BYTES elements in a length-prefixed buffer; false when
 * the lengths run past its end. */
bool tensor_bytes_elements(const void *data, size_t bytes, size_t *elements);
/* Sets t's data: borrowed when aligned for its datatype, else copied.
 * False when out of memory. */
bool tensor_set_data(struct serve_tensor *t, const void *data, size_t bytes);
/* Checks a decoded input's data size against its shape and datatype;
 * false with a message naming the input. */
bool tensor_check_size(const struct serve_tensor *t, char *err, size_t errlen);
void tensor_clear(struct serve_tensor *t);

/* Every output of the answer to send, in order, with its binary choice
 * settled; false with a message (400) when the request named an output
 * the plugin did not give. out[] has room for ts->output_count. */
bool tensor_outputs_to_send(struct tensor_set *ts, const struct serve_tensor **out,
                            size_t *count, char *err, size_t errlen);

/* The model name and version an OIP path names (/v2/models/NAME[/versions/
 * V]/infer), copied into name and version ("" when absent); false for
 * another path. */
bool tensor_oip_path(const char *path, char *name, size_t namelen, char *version,
                     size_t versionlen);

/* What a replica declared for the metadata answer (serve_replica_declare_
 * tensor). */
struct tensor_decls {
    struct serve_tensor *tensors; /* name, datatype, rank, shape only */
    int *direction;
    size_t count, cap;
    size_t inputs;
};
void tensor_decls_free(struct tensor_decls *d);
/* The declarations as the JSON members `"inputs": [...], "outputs": [...]`
 * (malloc'd; NULL when out of memory). */
char *tensor_decls_json(const struct tensor_decls *d);

/* The codecs. Decoders fill ts (inputs, params, id, wanted outputs) and
 * return false with one line in err; encoders return a malloc'd body. */
bool oip_json_decode(struct tensor_set *ts, const char *json, size_t json_len,
                     const char *binary, size_t binary_len, char *err, size_t errlen);
bool row_json_decode(struct tensor_set *ts, const char *json, size_t len, char *err,
                     size_t errlen);
/* *json_len: the JSON part's length (the rest is binary data); *binary:
 * some output went binary (even one of 0 bytes: the answer then needs
 * its Inference-Header-Content-Length). */
bool oip_json_encode(const struct tensor_set *ts, const struct serve_tensor *const *outs,
                     size_t n, const char *model, const char *version, char **body,
                     size_t *len, size_t *json_len, bool *binary);
bool row_json_encode(const struct serve_tensor *t, char **body, size_t *len);
/* Sets ts->wire to WIRE_MSGPACK or WIRE_ROW_MSGPACK. */
bool tensor_msgpack_decode(struct tensor_set *ts, const char *body, size_t len, char *err,
                           size_t errlen);
bool tensor_msgpack_encode(const struct tensor_set *ts, const struct serve_tensor *const *outs,
                           size_t n, char **body, size_t *len);
bool row_msgpack_encode(const struct serve_tensor *t, char **body, size_t *len);

#endif
