/* json_libs.c - which JSON library of Debian 12 serve uses for Open
 * Inference Protocol documents (SPEC 1), by measurement: decoding an infer
 * request with an FP32 [32, 64] input (flat and nested data) into floats,
 * and encoding an infer answer with an FP32 [32, 64] output, with jansson,
 * json-c and cJSON, and with simdjson through serve's own C shim
 * (runtime/json_dom.cpp; simdjson writes no JSON, so its encode is serve's:
 * one "%.9g" per number). jansson and json-c share symbol names, so each
 * library gets a binary of its own: built with -DUSE_JANSSON, -DUSE_JSONC,
 * -DUSE_CJSON or -DUSE_SIMDJSON by tests/bench/json.sh. */
#define _POSIX_C_SOURCE 200809L
#if defined(USE_SIMDJSON)
#include "json_dom.h"
#elif defined(USE_CJSON)
#include <cjson/cJSON.h>
#elif defined(USE_JANSSON)
#include <jansson.h>
#else
#include <json-c/json.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROWS 32
#define COLS 64
#define N (ROWS * COLS)

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static float values[N];

/* An infer request as a client sends it: data flat or nested by rows. */
static char *request(int nested)
{
    size_t cap = 64 + N * 20, n = 0;
    char *out = malloc(cap);
    n += (size_t)sprintf(out + n, "{\"id\": \"42\", \"inputs\": [{\"name\": \"x\", \"shape\": [%d, %d], "
                                  "\"datatype\": \"FP32\", \"data\": [", ROWS, COLS);
    for (int r = 0; r < ROWS; r++) {
        if (nested) n += (size_t)sprintf(out + n, "%s[", r ? ", " : "");
        for (int c = 0; c < COLS; c++)
            n += (size_t)sprintf(out + n, "%s%.9g", (c || (r && !nested)) ? ", " : "",
                                 values[r * COLS + c]);
        if (nested) out[n++] = ']';
    }
    n += (size_t)sprintf(out + n, "]}]}");
    return out;
}

static float sink;

/* ---- decoding: the document, then its data into floats ---- */

#if defined(USE_JANSSON)
static size_t jansson_fill(json_t *a, float *out, size_t at)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        if (json_is_array(v)) at = jansson_fill(v, out, at);
        else if (at < N) out[at++] = (float)json_number_value(v);
    }
    return at;
}

static int decode_jansson(const char *doc, size_t len, float *out)
{
    json_error_t err;
    json_t *root = json_loadb(doc, len, 0, &err);
    if (!root) return -1;
    json_t *data = json_object_get(json_array_get(json_object_get(root, "inputs"), 0), "data");
    size_t got = jansson_fill(data, out, 0);
    json_decref(root);
    return got == N ? 0 : -1;
}

#elif defined(USE_JSONC)
static size_t jsonc_fill(struct json_object *a, float *out, size_t at)
{
    size_t n = json_object_array_length(a);
    for (size_t i = 0; i < n; i++) {
        struct json_object *v = json_object_array_get_idx(a, i);
        if (json_object_is_type(v, json_type_array)) at = jsonc_fill(v, out, at);
        else if (at < N) out[at++] = (float)json_object_get_double(v);
    }
    return at;
}

static int decode_jsonc(const char *doc, size_t len, float *out)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *root = json_tokener_parse_ex(tok, doc, (int)len);
    json_tokener_free(tok);
    if (!root) return -1;
    struct json_object *inputs, *data;
    size_t got = 0;
    if (json_object_object_get_ex(root, "inputs", &inputs) &&
        json_object_object_get_ex(json_object_array_get_idx(inputs, 0), "data", &data))
        got = jsonc_fill(data, out, 0);
    json_object_put(root);
    return got == N ? 0 : -1;
}

#elif defined(USE_CJSON)
static size_t cjson_fill(const cJSON *a, float *out, size_t at)
{
    for (const cJSON *v = a ? a->child : NULL; v; v = v->next) {
        if (cJSON_IsArray(v)) at = cjson_fill(v, out, at);
        else if (at < N) out[at++] = (float)v->valuedouble;
    }
    return at;
}

static int decode_cjson(const char *doc, size_t len, float *out)
{
    cJSON *root = cJSON_ParseWithLength(doc, len);
    if (!root) return -1;
    const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(root, "inputs");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(inputs, 0), "data");
    size_t got = cjson_fill(data, out, 0);
    cJSON_Delete(root);
    return got == N ? 0 : -1;
}

#endif

/* ---- encoding: an infer answer with the floats, to a string ---- */

#if defined(USE_JANSSON)
static size_t encode_jansson(const float *v)
{
    json_t *data = json_array();
    for (int i = 0; i < N; i++) json_array_append_new(data, json_real(v[i]));
    json_t *out = json_pack("{s:s, s:s, s:[{s:s, s:[i,i], s:s, s:o}]}", "model_name", "m", "id",
                            "42", "outputs", "name", "y", "shape", ROWS, COLS, "datatype", "FP32",
                            "data", data);
    /* FP32 needs 9 significant digits to round-trip, not 17. */
    char *s = json_dumps(out, JSON_COMPACT | JSON_REAL_PRECISION(9));
    size_t n = strlen(s);
    free(s);
    json_decref(out);
    return n;
}

#elif defined(USE_JSONC)
static size_t encode_jsonc(const float *v)
{
    /* FP32 needs 9 significant digits to round-trip, not 17. */
    json_c_set_serialization_double_format("%.9g", JSON_C_OPTION_GLOBAL);
    struct json_object *data = json_object_new_array_ext(N);
    for (int i = 0; i < N; i++) json_object_array_add(data, json_object_new_double(v[i]));
    struct json_object *o = json_object_new_object(), *shape = json_object_new_array();
    json_object_array_add(shape, json_object_new_int(ROWS));
    json_object_array_add(shape, json_object_new_int(COLS));
    json_object_object_add(o, "name", json_object_new_string("y"));
    json_object_object_add(o, "shape", shape);
    json_object_object_add(o, "datatype", json_object_new_string("FP32"));
    json_object_object_add(o, "data", data);
    struct json_object *outs = json_object_new_array(), *root = json_object_new_object();
    json_object_array_add(outs, o);
    json_object_object_add(root, "model_name", json_object_new_string("m"));
    json_object_object_add(root, "id", json_object_new_string("42"));
    json_object_object_add(root, "outputs", outs);
    size_t n = strlen(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
    json_object_put(root);
    return n;
}

#elif defined(USE_SIMDJSON)
static size_t simdjson_fill(json_value a, float *out, size_t at)
{
    json_iter it;
    json_value v;
    for (bool more = json_first(a, &it, &v); more; more = json_next(&it, &v))
        if (json_kind_of(v) == JSON_ARRAY) at = simdjson_fill(v, out, at);
        else if (at < N) out[at++] = (float)json_number(v);
    return at;
}

static int decode_simdjson(const char *doc, size_t len, float *out)
{
    json_value root, inputs, first, data;
    char err[256];
    json_iter it;
    if (!json_parse(doc, len, &root, err, sizeof err) || !json_member(root, "inputs", &inputs) ||
        !json_first(inputs, &it, &first) || !json_member(first, "data", &data))
        return -1;
    return simdjson_fill(data, out, 0) == N ? 0 : -1;
}

static size_t encode_simdjson(const float *v)
{
    static char out[64 + N * 20];
    size_t n = (size_t)sprintf(out, "{\"model_name\":\"m\",\"id\":\"42\",\"outputs\":[{\"name\":"
                                    "\"y\",\"datatype\":\"FP32\",\"shape\":[%d,%d],\"data\":[",
                               ROWS, COLS);
    for (int i = 0; i < N; i++) n += (size_t)sprintf(out + n, "%s%.9g", i ? "," : "", v[i]);
    n += (size_t)sprintf(out + n, "]}]}");
    return n;
}

#else
static size_t encode_cjson(const float *v)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model_name", "m");
    cJSON_AddStringToObject(root, "id", "42");
    cJSON *outs = cJSON_AddArrayToObject(root, "outputs");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToArray(outs, o);
    cJSON_AddStringToObject(o, "name", "y");
    int shape[2] = {ROWS, COLS};
    cJSON_AddItemToObject(o, "shape", cJSON_CreateIntArray(shape, 2));
    cJSON_AddStringToObject(o, "datatype", "FP32");
    cJSON_AddItemToObject(o, "data", cJSON_CreateFloatArray(v, N));
    char *s = cJSON_PrintUnformatted(root);
    size_t n = strlen(s);
    cJSON_free(s);
    cJSON_Delete(root);
    return n;
}

#endif

typedef int (*decode_fn)(const char *, size_t, float *);
typedef size_t (*encode_fn)(const float *);

static void measure(const char *name, decode_fn dec, encode_fn enc, const char *flat,
                    const char *nested, int reps)
{
    float out[N];
    double best[3] = {1e30, 1e30, 1e30};
    size_t bytes = 0;
    for (int round = 0; round < 5; round++) {
        double t0 = now_us();
        for (int i = 0; i < reps; i++)
            if (dec(flat, strlen(flat), out) != 0) abort();
        double t1 = now_us();
        for (int i = 0; i < reps; i++)
            if (dec(nested, strlen(nested), out) != 0) abort();
        double t2 = now_us();
        for (int i = 0; i < reps; i++) bytes = enc(out);
        double t3 = now_us();
        double d[3] = {(t1 - t0) / reps, (t2 - t1) / reps, (t3 - t2) / reps};
        for (int k = 0; k < 3; k++)
            if (d[k] < best[k]) best[k] = d[k];
        sink += out[N - 1];
    }
    for (int i = 0; i < N; i++)
        if (out[i] != values[i]) {
            fprintf(stderr, "%s: value %d decoded as %.9g, sent %.9g\n", name, i, out[i], values[i]);
            exit(1);
        }
    printf("%-8s decode flat %7.1f us  nested %7.1f us  encode %7.1f us (%zu bytes)\n", name,
           best[0], best[1], best[2], bytes);
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 200;
    srand(7);
    for (int i = 0; i < N; i++) values[i] = (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
    char *flat = request(0), *nested = request(1);
#if defined(USE_JANSSON)
    measure("jansson", decode_jansson, encode_jansson, flat, nested, reps);
#elif defined(USE_JSONC)
    measure("json-c", decode_jsonc, encode_jsonc, flat, nested, reps);
#elif defined(USE_SIMDJSON)
    measure("simdjson", decode_simdjson, encode_simdjson, flat, nested, reps);
#else
    measure("cJSON", decode_cjson, encode_cjson, flat, nested, reps);
#endif
    free(flat);
    free(nested);
    return sink == 12345.0f;
}
