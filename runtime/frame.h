/* frame.h - the control socket's framing: a 4-byte big-endian length, then
 * that many bytes of msgpack. The server reads and writes frames on its
 * event loop (control.c); the CLI with the calls below, which wait at most
 * until a deadline. */
#ifndef SERVE_RUNTIME_FRAME_H
#define SERVE_RUNTIME_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_MAX (16u * 1024 * 1024)
#define FRAME_HEAD 4

/* The head of a frame of `len` bytes, and the length a head gives. */
void frame_head_write(unsigned char head[FRAME_HEAD], size_t len);
size_t frame_head_read(const unsigned char head[FRAME_HEAD]);

/* deadline_ns is a time of serve__now_ns() (clock.h), 0 for none; fd may be
 * blocking or not. 0 on success, -1 with errno on failure: ETIMEDOUT once
 * the deadline passed; 0 when the peer closed (frame_read). */
int frame_write(int fd, const void *data, size_t len, uint64_t deadline_ns);
/* Reads one frame into a malloc'd buffer. Returns as frame_write does, or -2
 * when the frame is larger than `max`. */
int frame_read(int fd, char **data, size_t *len, size_t max, uint64_t deadline_ns);

#endif
