/* log.c - the server log (see log.h) and the SDK's serve_log. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "replica_context.h"

static int log_level = SERVE_LOG_INFO;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

bool serve__log_debug_on;

void serve__log_set_level(int level)
{
    log_level = level;
    serve__log_debug_on = level >= SERVE_LOG_DEBUG;
}

int serve__log_level_from_name(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, level_names[i]) == 0) return i;
    return -1;
}

static void log_line(int level, const char *context, const char *fmt,
                     va_list ap)
{
    if (level > log_level) return;
    if (level < 0) level = 0;
    if (level > 3) level = 3;
    char line[2048];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof line - (size_t)n, ".%03ldZ %s %s", (long)tv.tv_usec / 1000,
                  level_names[level], context ? context : "");
    if (n < (int)sizeof line) {
        int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        n = m < 0 ? n : n + m;
    }
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, (size_t)n);
    (void)ignored;
}

void serve__log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line(level, "", fmt, ap);
    va_end(ap);
}

SERVE_EXPORT void serve_log(const serve_replica *replica, int level,
                            const char *fmt, ...)
{
    char context[256] = "";
    if (replica)
        snprintf(context, sizeof context, "backend=%s replica=%d: ",
                 replica->backend_name, replica->index);
    va_list ap;
    va_start(ap, fmt);
    log_line(level, context, fmt, ap);
    va_end(ap);
}

bool log_rate_allow(struct log_rate *r, uint64_t interval_ns, unsigned *suppressed)
{
    uint64_t now = serve__now_ns();
    if (r->last_ns && now - r->last_ns < interval_ns) {
        r->suppressed++;
        return false;
    }
    *suppressed = r->suppressed;
    r->suppressed = 0;
    r->last_ns = now;
    return true;
}

void log_batch_failed(struct log_rate *r, const char *backend, int replica, int rc, size_t n)
{
    unsigned suppressed;
    if (!log_rate_allow(r, 1000000000ull, &suppressed)) return;
    char more[64] = "";
    if (suppressed) snprintf(more, sizeof more, " (and %u more since the last line)", suppressed);
    LOG_WARN("backend=%s replica=%d: handle_batch returned %d for a batch of %zu; the requests "
             "it left unanswered got 500%s", backend, replica, rc, n, more);
}
