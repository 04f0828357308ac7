/* metrics_diff.h - what a serve server did during a run, from its /metrics
 * read before and after. */
#ifndef SERVE_BENCH_METRICS_DIFF_H
#define SERVE_BENCH_METRICS_DIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define BATCH_BOUNDS 12 /* 1 2 4 ... 1024 and +Inf */

struct backend_stats {
    char name[80];
    double requests, batches;
    double batch_le[BATCH_BOUNDS]; /* cumulative, as Prometheus writes them */
    double batch_sum, batch_count;
    double queue_sum, queue_count, exec_sum, exec_count;
};

struct server_stats {
    bool valid;                    /* the target is a serve server */
    size_t count;
    struct backend_stats backends[64];
};

extern const char *const batch_bound_labels[BATCH_BOUNDS];

/* GET http://addr/metrics with Host: host; invalid when not a serve server. */
void server_stats_fetch(const struct sockaddr *addr, socklen_t len, const char *host,
                        struct server_stats *out);
/* after -= before, backend by backend; drops backends that took nothing. */
void server_stats_diff(struct server_stats *after, const struct server_stats *before);

#endif
