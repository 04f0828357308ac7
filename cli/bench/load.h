/* load.h - the load generator behind `serve bench`: T event loops, N
 * keep-alive connections, closed loop (each connection one request at a
 * time) or open loop (a fixed schedule, latency measured from each
 * request's intended send time so that a stalled server is not hidden). */
#ifndef SERVE_BENCH_LOAD_H
#define SERVE_BENCH_LOAD_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "histogram.h"

struct load_config {
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char **requests;          /* whole HTTP requests, sent in turn */
    size_t *request_lens;
    size_t request_count;
    int connections;
    int threads;
    double rate;              /* requests/s over all threads; 0: closed loop */
    uint64_t duration_ns;     /* 0 with count > 0 */
    uint64_t count;           /* 0: run for duration */
    uint64_t warmup_ns;
    uint64_t timeout_ns;
    bool progress;            /* a live line on stderr */
};

struct load_result {
    struct latency_histogram latency;
    uint64_t requests;        /* answered (any status) after warm-up */
    uint64_t bytes;
    uint64_t errors_connect, errors_read, errors_timeout;
    uint64_t by_status[600];
    uint64_t late;            /* open loop: sent more than 1 ms after their time */
    uint64_t unsent;          /* open loop: still waiting for a connection at the end */
    /* Streamed (chunked) answers: time from the intended send to the first
     * chunk, and between two chunks of one answer, in µs; chunks counted. */
    struct latency_histogram first_byte;
    struct latency_histogram between_chunks;
    uint64_t chunks;
    uint64_t streams;         /* answers that came chunked */
    double duration_s;
};

/* Runs the load; false with err set when it could not start. */
bool load_run(const struct load_config *cfg, struct load_result *out, char *err, size_t errlen);

#endif
