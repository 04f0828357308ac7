/* frame.c - length-prefixed frames (see frame.h). */
#include "frame.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *data, size_t len)
{
    char *p = data;
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) errno = 0;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int frame_write(int fd, const void *data, size_t len)
{
    if (len > FRAME_MAX) {
        errno = EMSGSIZE;
        return -1;
    }
    unsigned char head[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
                             (unsigned char)(len >> 8), (unsigned char)len};
    if (write_all(fd, head, 4) != 0) return -1;
    return write_all(fd, data, len);
}

int frame_read(int fd, char **data, size_t *len, size_t max)
{
    unsigned char head[4];
    if (read_all(fd, head, 4) != 0) return -1;
    size_t n = ((size_t)head[0] << 24) | ((size_t)head[1] << 16) |
               ((size_t)head[2] << 8) | head[3];
    if (n > max) return -2;
    char *buf = malloc(n ? n : 1);
    if (!buf) return -1;
    if (read_all(fd, buf, n) != 0) {
        free(buf);
        return -1;
    }
    *data = buf;
    *len = n;
    return 0;
}
