/* mp.h - small helpers over msgpack-c for the maps the control plane and the
 * state file speak. Every map is keyed by short strings. */
#ifndef SERVE_RUNTIME_MP_H
#define SERVE_RUNTIME_MP_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

void mp_pack_str(msgpack_packer *pk, const char *s); /* NULL packs nil */
void mp_pack_key(msgpack_packer *pk, const char *key);

/* The value for `key` in map `map`, or NULL when map is not a map or lacks
 * the key. */
const msgpack_object *mp_get(const msgpack_object *map, const char *key);

/* Typed reads. Each returns false (leaving *out alone) when the object is
 * missing or of another type. */
bool mp_as_str(const msgpack_object *o, char **out);   /* malloc'd copy */
bool mp_as_uint(const msgpack_object *o, uint64_t *out);
bool mp_as_double(const msgpack_object *o, double *out); /* ints too */
bool mp_as_bool(const msgpack_object *o, bool *out);

/* True when `o` is a string equal to s. */
bool mp_str_eq(const msgpack_object *o, const char *s);

#endif
