/* test_tensor.c - the tensor codecs (runtime/oip_json.c,
 * runtime/tensor_msgpack.c, runtime/tensor.c): what each decoder takes and
 * refuses, with the message a client gets, and encodings that read back. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor.h"
#include "unit.h"

static struct tensor_set *decode_json(const char *doc, char *err, size_t errlen)
{
    struct tensor_set *ts = calloc(1, sizeof *ts);
    err[0] = '\0';
    if (!oip_json_decode(ts, doc, strlen(doc), NULL, 0, err, errlen)) {
        tensor_set_free(ts);
        return NULL;
    }
    return ts;
}

TEST_IMPL(tensor_oip_json_decode)
{
    char err[512];
    struct tensor_set *ts = decode_json(
        "{\"id\": \"7\", \"parameters\": {\"k\": 3, \"s\": \"v\", \"binary_data_output\": true},"
        " \"inputs\": [{\"name\": \"a\", \"shape\": [2, 2], \"datatype\": \"INT16\","
        " \"data\": [[1, -2], [3, 4]]}, {\"name\": \"s\", \"shape\": [2], \"datatype\": \"BYTES\","
        " \"data\": [\"x\", \"\"]}], \"outputs\": [{\"name\": \"a\"}]}", err, sizeof err);
    ASSERT_NOT_NULL(ts);
    ASSERT(strcmp(ts->id, "7") == 0);
    ASSERT_EQ(ts->input_count, 2);
    const struct serve_tensor *a = &ts->inputs[0];
    ASSERT_EQ(a->datatype, SERVE_TYPE_INT16);
    ASSERT_EQ(a->count, 4);
    const int16_t *v = a->data;
    ASSERT(v[0] == 1 && v[1] == -2 && v[2] == 3 && v[3] == 4);
    ASSERT_EQ(ts->inputs[1].bytes, 9); /* 4 + 1, then 4 + 0 */
    ASSERT(ts->binary_output);
    ASSERT_EQ(ts->wanted_count, 1);
    ASSERT(strcmp(ts->params[0], "k") == 0 && strcmp(ts->params[1], "3") == 0);
    tensor_set_free(ts);
    return 0;
}

TEST_IMPL(tensor_oip_json_refusals)
{
    static const struct {
        const char *doc, *says;
    } cases[] = {
        {"{", "malformed JSON"},
        {"[]", "must be a JSON object"},
        {"{\"inputs\": 1}", "\"inputs\" (an array of tensors) is required"},
        {"{\"inputs\": [{\"name\": \"a\", \"shape\": [3], \"datatype\": \"BOOL\", \"data\": [true]}]}",
         "input 'a': shape [3] holds 3 elements, data has 1"},
        {"{\"inputs\": [{\"name\": \"a\", \"shape\": [1], \"datatype\": \"X\", \"data\": [1]}]}",
         "unknown datatype \"X\""},
        {"{\"inputs\": [{\"name\": \"a\", \"shape\": [1], \"datatype\": \"INT8\", \"data\": [200]}]}",
         "element 0 (200) is not an integer in its range for INT8"},
        {"{\"inputs\": [{\"name\": \"a\", \"shape\": [1], \"datatype\": \"FP16\", \"data\": [1]}]}",
         "FP16 data cannot be sent as JSON"},
        {"{\"inputs\": [{\"name\": \"a\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [1e39]}]}",
         "is not within float32 range"},
        {"{\"inputs\": [{\"name\": \"a\", \"shape\": [1], \"datatype\": \"INT32\","
         " \"parameters\": {\"binary_data_size\": 4}}]}", "binary_data_size without binary data"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char err[512];
        ASSERT(decode_json(cases[i].doc, err, sizeof err) == NULL);
        if (!strstr(err, cases[i].says)) {
            fprintf(stderr, "case %zu: got \"%s\", want \"%s\"\n", i, err, cases[i].says);
            return 1;
        }
    }
    return 0;
}

TEST_IMPL(tensor_binary_data)
{
    const char header[] = "{\"inputs\": [{\"name\": \"x\", \"shape\": [2], \"datatype\": \"UINT16\","
                          " \"parameters\": {\"binary_data_size\": 4}}]}";
    char body[sizeof header + 8];
    memcpy(body, header, sizeof header - 1);
    const unsigned char data[] = {1, 0, 0xff, 0xff, 9};
    memcpy(body + sizeof header - 1, data, sizeof data);
    struct tensor_set *ts = calloc(1, sizeof *ts);
    char err[512] = "";
    ASSERT(oip_json_decode(ts, body, sizeof header - 1, body + sizeof header - 1, 4, err, sizeof err));
    const uint16_t *v = ts->inputs[0].data;
    ASSERT(v[0] == 1 && v[1] == 0xffff);
    tensor_set_free(ts);
    ts = calloc(1, sizeof *ts);
    ASSERT(!oip_json_decode(ts, body, sizeof header - 1, body + sizeof header - 1, 5, err, sizeof err));
    ASSERT(strstr(err, "1 bytes of binary data after") != NULL);
    tensor_set_free(ts);
    ts = calloc(1, sizeof *ts);
    ASSERT(!oip_json_decode(ts, body, sizeof header - 1, body + sizeof header - 1, 3, err, sizeof err));
    ASSERT(strstr(err, "binary_data_size 4 runs past the body (3 bytes") != NULL);
    tensor_set_free(ts);
    return 0;
}

TEST_IMPL(tensor_json_encode_reads_back)
{
    /* Floats that read back exactly, -0 kept, nesting by shape. */
    const float values[] = {1.1f, -0.0f, 3.4028235e38f, 1e-45f, 2.0f, 0.5f};
    struct serve_tensor t = {.name = "f", .datatype = SERVE_TYPE_FP32, .rank = 2,
                             .shape = {3, 2}, .count = 6, .data = values, .bytes = sizeof values};
    char *body;
    size_t len;
    ASSERT(row_json_encode(&t, &body, &len));
    if (strcmp(body, "[[1.10000002,-0.0],[3.40282347e+38,1.40129846e-45],[2,0.5]]") != 0) {
        fprintf(stderr, "got %s\n", body);
        return 1;
    }
    struct tensor_set *ts = calloc(1, sizeof *ts);
    char err[256] = "";
    ASSERT(row_json_decode(ts, body, len, err, sizeof err));
    ASSERT_EQ(ts->inputs[0].rank, 2);
    ASSERT(memcmp(ts->inputs[0].data, values, sizeof values) == 0);
    tensor_set_free(ts);
    free(body);
    /* Ragged rows are refused even when the count happens to fit. */
    ts = calloc(1, sizeof *ts);
    ASSERT(!row_json_decode(ts, "[[1], [2, 3], []]", 17, err, sizeof err));
    ASSERT(strstr(err, "rectangular") != NULL);
    tensor_set_free(ts);
    return 0;
}

TEST_IMPL(tensor_msgpack)
{
    /* {"inputs": [{"name": "x", "datatype": "INT8", "shape": [2], "data": bin 2}]} */
    const char doc[] = "\x81\xa6inputs\x91\x84\xa4name\xa1x\xa8" "datatype\xa4INT8"
                       "\xa5shape\x91\x02\xa4" "data\xc4\x02\x05\xfb";
    struct tensor_set *ts = calloc(1, sizeof *ts);
    char err[256] = "";
    ASSERT(tensor_msgpack_decode(ts, doc, sizeof doc - 1, err, sizeof err));
    ASSERT_EQ(ts->wire, WIRE_MSGPACK);
    const int8_t *v = ts->inputs[0].data;
    ASSERT(v[0] == 5 && v[1] == -5);
    tensor_set_free(ts);
    /* A bare row of numbers; a count past the body is refused unread. */
    ts = calloc(1, sizeof *ts);
    ASSERT(tensor_msgpack_decode(ts, "\x92\x01\xca\x3f\x80\x00\x00", 7, err, sizeof err));
    ASSERT_EQ(ts->wire, WIRE_ROW_MSGPACK);
    ASSERT_EQ(ts->inputs[0].count, 2);
    tensor_set_free(ts);
    ts = calloc(1, sizeof *ts);
    ASSERT(!tensor_msgpack_decode(ts, "\xdd\xff\xff\xff\xff\xca", 6, err, sizeof err));
    ASSERT(strstr(err, "malformed msgpack") != NULL);
    tensor_set_free(ts);
    return 0;
}

TEST_IMPL(tensor_oip_path)
{
    char name[64], version[16];
    ASSERT(tensor_oip_path("/v2/models/m/infer", name, sizeof name, version, sizeof version));
    ASSERT(strcmp(name, "m") == 0 && version[0] == '\0');
    ASSERT(tensor_oip_path("/v2/models/m/versions/3/infer", name, sizeof name, version, sizeof version));
    ASSERT(strcmp(version, "3") == 0);
    ASSERT(!tensor_oip_path("/v2/models/m", name, sizeof name, version, sizeof version));
    ASSERT(!tensor_oip_path("/v2/models//infer", name, sizeof name, version, sizeof version));
    ASSERT(!tensor_oip_path("/m/infer", name, sizeof name, version, sizeof version));
    return 0;
}
