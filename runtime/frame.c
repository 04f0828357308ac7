/* frame.c - length-prefixed frames (see frame.h). */
#include "frame.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include "clock.h"

void frame_head_write(unsigned char head[FRAME_HEAD], size_t len)
{
    head[0] = (unsigned char)(len >> 24);
    head[1] = (unsigned char)(len >> 16);
    head[2] = (unsigned char)(len >> 8);
    head[3] = (unsigned char)len;
}

size_t frame_head_read(const unsigned char head[FRAME_HEAD])
{
    return ((size_t)head[0] << 24) | ((size_t)head[1] << 16) | ((size_t)head[2] << 8) | head[3];
}

/* Waits until fd is ready for `events`, or fails with ETIMEDOUT at the
 * deadline. */
static int wait_ready(int fd, short events, uint64_t deadline_ns)
{
    for (;;) {
        int timeout_ms = -1;
        if (deadline_ns) {
            uint64_t now = serve__now_ns();
            if (now >= deadline_ns) {
                errno = ETIMEDOUT;
                return -1;
            }
            timeout_ms = (int)((deadline_ns - now + 999999) / 1000000);
        }
        struct pollfd p = {fd, events, 0};
        int n = poll(&p, 1, timeout_ms);
        if (n > 0) return 0;
        if (n < 0 && errno != EINTR) return -1;
    }
}

static int write_all(int fd, const void *data, size_t len, uint64_t deadline_ns)
{
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_ready(fd, POLLOUT, deadline_ns) != 0) return -1;
            continue;
        }
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *data, size_t len, uint64_t deadline_ns)
{
    char *p = data;
    while (len) {
        if (wait_ready(fd, POLLIN, deadline_ns) != 0) return -1;
        ssize_t n = read(fd, p, len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (n == 0) errno = 0;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int frame_write(int fd, const void *data, size_t len, uint64_t deadline_ns)
{
    if (len > FRAME_MAX) {
        errno = EMSGSIZE;
        return -1;
    }
    unsigned char head[FRAME_HEAD];
    frame_head_write(head, len);
    if (write_all(fd, head, FRAME_HEAD, deadline_ns) != 0) return -1;
    return write_all(fd, data, len, deadline_ns);
}

int frame_read(int fd, char **data, size_t *len, size_t max, uint64_t deadline_ns)
{
    unsigned char head[FRAME_HEAD];
    if (read_all(fd, head, FRAME_HEAD, deadline_ns) != 0) return -1;
    size_t n = frame_head_read(head);
    if (n > max) return -2;
    char *buf = malloc(n ? n : 1);
    if (!buf) return -1;
    if (read_all(fd, buf, n, deadline_ns) != 0) {
        free(buf);
        return -1;
    }
    *data = buf;
    *len = n;
    return 0;
}
