/* mp_bounds.h - checks msgpack bytes before msgpack-c unpacks them.
 *
 * msgpack-c allocates a container's elements from the count in its header
 * before reading them, so five bytes claiming 2^32 elements ask for about
 * 100 GB. Every element takes at least one byte, so a document whose every
 * count fits in the bytes that follow is unpacked in memory proportional to
 * its size. Used on every msgpack input from outside: control frames, the
 * state file, and request bodies of the torch and cuda plugins. */
#ifndef SERVE_RUNTIME_MP_BOUNDS_H
#define SERVE_RUNTIME_MP_BOUNDS_H

#include <stdbool.h>
#include <stddef.h>

/* True when data starts with one whole msgpack object whose containers'
 * counts are all possible in `len` bytes; *used gets its size. */
bool mp_bounded(const char *data, size_t len, size_t *used);

#endif
