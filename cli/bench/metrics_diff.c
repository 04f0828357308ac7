/* metrics_diff.c - reads a serve server's /metrics (see metrics_diff.h). */
#include "metrics_diff.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

const char *const batch_bound_labels[BATCH_BOUNDS] = {"1",  "2",   "4",   "8",    "16",  "32",
                                                      "64", "128", "256", "512", "1024", "+Inf"};

static struct backend_stats *backend(struct server_stats *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->count; i++)
        if (strlen(s->backends[i].name) == len && strncmp(s->backends[i].name, name, len) == 0)
            return &s->backends[i];
    if (s->count == sizeof s->backends / sizeof *s->backends || len >= 80) return NULL;
    struct backend_stats *b = &s->backends[s->count++];
    memset(b, 0, sizeof *b);
    memcpy(b->name, name, len);
    return b;
}

static void parse_line(struct server_stats *s, const char *line)
{
    static const char prefix[] = "serve_backend_";
    if (strncmp(line, prefix, sizeof prefix - 1) != 0) return;
    const char *series = line + sizeof prefix - 1;
    const char *label = strstr(line, "backend=\"");
    const char *value = strrchr(line, ' ');
    if (!label || !value) return;
    label += 9;
    const char *end = strchr(label, '"');
    if (!end) return;
    struct backend_stats *b = backend(s, label, (size_t)(end - label));
    if (!b) return;
    double v = strtod(value + 1, NULL);
    if (strncmp(series, "requests_total{", 15) == 0) b->requests = v;
    else if (strncmp(series, "batches_total{", 14) == 0) b->batches = v;
    else if (strncmp(series, "batch_size_sum{", 15) == 0) b->batch_sum = v;
    else if (strncmp(series, "batch_size_count{", 17) == 0) b->batch_count = v;
    else if (strncmp(series, "queue_seconds_sum{", 18) == 0) b->queue_sum = v;
    else if (strncmp(series, "queue_seconds_count{", 20) == 0) b->queue_count = v;
    else if (strncmp(series, "exec_seconds_sum{", 17) == 0) b->exec_sum = v;
    else if (strncmp(series, "exec_seconds_count{", 19) == 0) b->exec_count = v;
    else if (strncmp(series, "batch_size_bucket{", 18) == 0) {
        const char *le = strstr(line, "le=\"");
        for (int i = 0; le && i < BATCH_BOUNDS; i++) {
            size_t n = strlen(batch_bound_labels[i]);
            if (strncmp(le + 4, batch_bound_labels[i], n) == 0 && le[4 + n] == '"') b->batch_le[i] = v;
        }
    }
}

void server_stats_fetch(const struct sockaddr *addr, socklen_t len, const char *host,
                        struct server_stats *out)
{
    memset(out, 0, sizeof *out);
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {3, 0};
    if (fd < 0) return;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char request[512];
    int n = snprintf(request, sizeof request,
                     "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host);
    if (connect(fd, addr, len) != 0 || write(fd, request, (size_t)n) != n) {
        close(fd);
        return;
    }
    size_t cap = 1 << 16, used = 0;
    char *buf = malloc(cap + 1);
    for (ssize_t got; buf && (got = read(fd, buf + used, cap - used)) > 0;) {
        used += (size_t)got;
        if (used == cap) {
            char *grown = realloc(buf, cap * 2 + 1);
            if (!grown) break;
            buf = grown;
            cap *= 2;
        }
    }
    close(fd);
    if (!buf) return;
    buf[used] = '\0';
    char *body = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.1 200", 12) == 0 && body && strstr(body, "serve_backend_")) {
        out->valid = true;
        char *save = NULL;
        for (char *line = strtok_r(body + 4, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
            parse_line(out, line);
    } else if (strncmp(buf, "HTTP/1.1 200", 12) == 0 && body && strstr(body, "serve_http_")) {
        out->valid = true; /* a serve server that has no backend in its routes */
    }
    free(buf);
}

void server_stats_diff(struct server_stats *after, const struct server_stats *before)
{
    size_t kept = 0;
    for (size_t i = 0; i < after->count; i++) {
        struct backend_stats b = after->backends[i];
        for (size_t j = 0; j < before->count; j++) {
            const struct backend_stats *o = &before->backends[j];
            if (strcmp(o->name, b.name) != 0) continue;
            /* A backend replaced during the run restarts its counters. */
            if (b.requests < o->requests) break;
            b.requests -= o->requests;
            b.batches -= o->batches;
            for (int k = 0; k < BATCH_BOUNDS; k++) b.batch_le[k] -= o->batch_le[k];
            b.batch_sum -= o->batch_sum;
            b.batch_count -= o->batch_count;
            b.queue_sum -= o->queue_sum;
            b.queue_count -= o->queue_count;
            b.exec_sum -= o->exec_sum;
            b.exec_count -= o->exec_count;
        }
        if (b.requests > 0) after->backends[kept++] = b;
    }
    after->count = kept;
}
