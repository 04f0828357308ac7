/* rows.h - one request's input row: JSON nested arrays of numbers, or a
 * msgpack array of floats; and writing an output row back the same way. */
#ifndef SERVE_TORCH_ROWS_H
#define SERVE_TORCH_ROWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "torch_shim.h"

struct row {
    float *data;     /* malloc'd, row-major */
    size_t count;
    int64_t shape[TORCH_SHIM_MAX_RANK];
    int rank;
};

/* Parses `body`; false with a message in err for anything but a
 * rectangular array of numbers. */
bool row_parse_json(const char *body, size_t len, struct row *out, char *err, size_t errlen);
bool row_parse_msgpack(const char *body, size_t len, struct row *out, char *err, size_t errlen);
void row_free(struct row *r);

/* "[64]" or "[3, 32, 32]" */
void shape_format(const int64_t *shape, int rank, char *buf, size_t len);
/* Parses "64" or "3,32,32". */
bool shape_parse(const char *text, int64_t *shape, int *rank);

/* Malloc'd answers; *len gets the size. */
char *row_to_json(const float *data, const int64_t *shape, int rank, size_t *len);
char *row_to_msgpack(const float *data, size_t count, size_t *len);

#endif
