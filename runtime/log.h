/* log.h - the server log: one line per event, with level and context.
 *
 * Lines go to stderr (the daemon points stderr at the log file in the state
 * dir). Each line is written with one write(2) so lines from different
 * threads never interleave. */
#ifndef SERVE_RUNTIME_LOG_H
#define SERVE_RUNTIME_LOG_H

#include <stdbool.h>

#include "serve/plugin.h"

void serve__log_set_level(int level);
int serve__log_level_from_name(const char *name); /* -1 if unknown */
void serve__log(int level, const char *fmt, ...) SERVE_PRINTF(2, 3);

#define LOG_ERROR(...) serve__log(SERVE_LOG_ERROR, __VA_ARGS__)
#define LOG_WARN(...) serve__log(SERVE_LOG_WARN, __VA_ARGS__)

/* At most one line per interval for a repeated event: log_rate_allow says
 * whether this occurrence may be logged, and how many were not since the
 * last one that was. One owner thread per log_rate. */
struct log_rate {
    uint64_t last_ns;
    unsigned suppressed;
};
bool log_rate_allow(struct log_rate *r, uint64_t interval_ns, unsigned *suppressed);

/* The line for a handle_batch that returned non-zero (both replica kinds),
 * at most one a second per replica. */
void log_batch_failed(struct log_rate *r, const char *backend, int replica, int rc, size_t n);
#define LOG_INFO(...) serve__log(SERVE_LOG_INFO, __VA_ARGS__)
/* Checked before the call: debug lines sit on hot paths. */
#define LOG_DEBUG(...) \
    do { \
        if (serve__log_debug_on) serve__log(SERVE_LOG_DEBUG, __VA_ARGS__); \
    } while (0)
extern bool serve__log_debug_on;

#endif
