/* loopback.h - what the network fuzz targets share: a client connection
 * to a port of this machine, and sending an input whole or in two writes
 * (to reach a reader's partial-read paths). Header only: each target is
 * one file. */
#ifndef SERVE_FUZZ_LOOPBACK_H
#define SERVE_FUZZ_LOOPBACK_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static inline void fuzz_send_all(int fd, const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n <= 0) return; /* the other side may close early: fine */
        data += n;
        len -= (size_t)n;
    }
}

/* Whole, or when `split`, cut at cut % len into two writes 100 us apart. */
static inline void fuzz_send(int fd, const uint8_t *data, size_t len, bool split, size_t cut)
{
    if (split && len > 1) {
        cut %= len;
        fuzz_send_all(fd, data, cut);
        usleep(100);
        fuzz_send_all(fd, data + cut, len - cut);
    } else {
        fuzz_send_all(fd, data, len);
    }
}

/* A connection to 127.0.0.1:port; aborts (the finding) when refused. */
static inline int fuzz_connect(int port, const char *who)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) return fd;
        /* Hundreds of thousands of connections a run reuse client ports
         * while the server's side of an old one is in TIME_WAIT: such a
         * connect waits for a SYN retry, and libFuzzer's timer signal can
         * interrupt it. That is not the server gone; a refusal is. */
        if (fd >= 0 && errno == EINTR) {
            close(fd);
            continue;
        }
        fprintf(stderr, "%s: connect: %s\n", who, strerror(errno));
        abort(); /* the server is gone: that is the finding */
    }
}

#endif
