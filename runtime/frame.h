/* frame.h - the control socket's framing: a 4-byte big-endian length, then
 * that many bytes of msgpack. Blocking I/O on both ends. */
#ifndef SERVE_RUNTIME_FRAME_H
#define SERVE_RUNTIME_FRAME_H

#include <stddef.h>

#define FRAME_MAX (16u * 1024 * 1024)

/* 0 on success, -1 with errno on failure. */
int frame_write(int fd, const void *data, size_t len);
/* Reads one frame into a malloc'd buffer. 0 on success; -1 on I/O error or
 * EOF (errno 0 for a clean EOF before any byte), -2 when the frame is larger
 * than `max`. */
int frame_read(int fd, char **data, size_t *len, size_t max);

#endif
