/* json_dom.h - the C face of simdjson's DOM parser (json_dom.cpp), all the
 * runtime reads JSON with: Open Inference Protocol documents and bare rows.
 * Plain C types only; no exception crosses it.
 *
 * A parse fills the calling thread's parser; the values it gives stay valid
 * until that thread's next parse. A value is a small handle (two words),
 * copied freely. */
#ifndef SERVE_RUNTIME_JSON_DOM_H
#define SERVE_RUNTIME_JSON_DOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct json_value {
    const void *doc;
    size_t index;
} json_value;

/* An iterator over an array's values or an object's members. */
typedef struct json_iter {
    json_value at, end;
} json_iter;

enum json_kind {
    JSON_NULL,
    JSON_BOOL,
    JSON_INT64,   /* an integer that fits int64 */
    JSON_UINT64,  /* an integer above INT64_MAX */
    JSON_DOUBLE,  /* any other number */
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
};

/* Parses exactly `len` bytes as one JSON document (strict RFC 8259: no
 * NaN, no comments, nothing after the document); false with one line in
 * err. */
bool json_parse(const char *text, size_t len, json_value *root, char *err, size_t errlen);

enum json_kind json_kind_of(json_value v);

/* The member `key` of an object; false when v is not an object or lacks it. */
bool json_member(json_value v, const char *key, json_value *out);
/* Entries of an array, members of an object (0 for other kinds). */
size_t json_size(json_value v);

/* Walks an array: json_first then json_next until they return false. */
bool json_first(json_value array, json_iter *it, json_value *out);
bool json_next(json_iter *it, json_value *out);
/* Walks an object's members: their key (not NUL-terminated: *klen) and value. */
bool json_first_member(json_value object, json_iter *it, const char **key, size_t *klen,
                       json_value *out);
bool json_next_member(json_iter *it, const char **key, size_t *klen, json_value *out);

/* Values; each returns 0 / false / NULL for a value of another kind. */
bool json_bool(json_value v);
int64_t json_int64(json_value v);
uint64_t json_uint64(json_value v);   /* JSON_UINT64, or a non-negative JSON_INT64 */
double json_number(json_value v);     /* any number, as a double */
const char *json_string(json_value v, size_t *len); /* not NUL-terminated */
/* The value as minified JSON text (malloc'd; NULL when out of memory). */
char *json_text(json_value v);

/* True when text[0..len) is valid UTF-8 (what a JSON string may hold). */
bool json_valid_utf8(const char *text, size_t len);

#ifdef __cplusplus
}
#endif

#endif
