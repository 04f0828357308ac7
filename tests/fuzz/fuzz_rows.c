/* fuzz_rows.c - libFuzzer target for the torch plugin's input parser: the
 * bytes are a request body, parsed as JSON and as msgpack. A row that
 * parses must write back and parse again to the same shape. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rows.h"

static void round_trip(const struct row *r)
{
    size_t len = 0;
    char *json = row_to_json(r->data, r->shape, r->rank, &len);
    struct row again;
    char err[256];
    if (!json || !row_parse_json(json, len, &again, err, sizeof err)) {
        fprintf(stderr, "fuzz_rows: a parsed row did not parse back: %s\n", err);
        abort();
    }
    if (again.count != r->count || again.rank != r->rank ||
        memcmp(again.shape, r->shape, sizeof r->shape[0] * (size_t)r->rank) != 0)
        abort();
    row_free(&again);
    free(json);
    char *mp = row_to_msgpack(r->data, r->count, &len);
    if (!mp || !row_parse_msgpack(mp, len, &again, err, sizeof err) || again.count != r->count)
        abort();
    row_free(&again);
    free(mp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct row r;
    char err[256];
    if (row_parse_json((const char *)data, size, &r, err, sizeof err)) {
        round_trip(&r);
        row_free(&r);
    }
    if (row_parse_msgpack((const char *)data, size, &r, err, sizeof err)) {
        round_trip(&r);
        row_free(&r);
    }
    return 0;
}
