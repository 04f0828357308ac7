/* access_log.c - the access log (see access_log.h). */
#include "access_log.h"
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "clock.h"

bool access_log_on;
static int log_fd = -1;
static enum access_log_format log_format;
static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[65536];
static size_t log_len;

bool access_log_open(const char *path, enum access_log_format format, char *err, size_t errlen)
{
    int fd = strcmp(path, "-") == 0 ? dup(STDOUT_FILENO)
                                     : open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "access log %s: %s", path, strerror(errno));
        return false;
    }
    log_fd = fd;
    log_format = format;
    access_log_on = true;
    return true;
}

static void write_out(void)
{
    size_t off = 0;
    while (off < log_len) {
        ssize_t n = write(log_fd, log_buf + off, log_len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; /* a full disk must not stop serving */
        off += (size_t)n;
    }
    log_len = 0;
}

void access_log_flush(void)
{
    if (!access_log_on) return;
    pthread_mutex_lock(&log_mutex);
    write_out();
    pthread_mutex_unlock(&log_mutex);
}

void access_log_close(void)
{
    if (!access_log_on) return;
    access_log_flush();
    access_log_on = false;
    close(log_fd);
    log_fd = -1;
}

static void append(const char *line, size_t n)
{
    pthread_mutex_lock(&log_mutex);
    if (log_len + n > sizeof log_buf) write_out();
    if (n <= sizeof log_buf) {
        memcpy(log_buf + log_len, line, n);
        log_len += n;
    }
    if (log_len > 32768) write_out();
    pthread_mutex_unlock(&log_mutex);
}

static void wall_time(char *buf, size_t len, bool json)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    if (json) {
        size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(buf + n, len - n, ".%03ldZ", (long)tv.tv_usec / 1000);
    } else {
        strftime(buf, len, "%d/%b/%Y:%H:%M:%S +0000", &tm);
    }
}

/* Strings from clients go into JSON and quoted fields: escape them. */
static size_t escaped(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; s && *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
    return n;
}

static long long us_between(uint64_t from, uint64_t to)
{
    return from && to >= from ? (long long)((to - from) / 1000) : -1;
}

void access_log_request(const serve_request *req, const char *kind, const char *client,
                        const char *endpoint, int status, size_t bytes)
{
    uint64_t written = serve__now_ns();
    char when[64], path[1024], id[300], line[3072];
    wall_time(when, sizeof when, log_format == ACCESS_LOG_JSON);
    escaped(path, sizeof path, req->path);
    escaped(id, sizeof id, req->id);
    const char *backend = req->backend ? backend_name(req->backend) : "-";
    long long total = us_between(req->received_ns, written);
    long long queue = us_between(req->enqueued_ns, req->dispatched_ns);
    int n;
    if (log_format == ACCESS_LOG_JSON) {
        n = snprintf(line, sizeof line,
                     "{\"time\": \"%s\", \"kind\": \"%s\", \"client\": \"%s\", \"id\": \"%s\", "
                     "\"method\": \"%s\", \"path\": \"%s\", \"endpoint\": \"%s\", \"backend\": \"%s\", "
                     "\"status\": %d, \"bytes\": %zu, \"total_us\": %lld, \"queue_us\": %lld, "
                     "\"batch_size\": %u, \"stages_us\": {\"received_to_queued\": %lld, "
                     "\"queued_to_dispatched\": %lld, \"dispatched_to_answered\": %lld, "
                     "\"answered_to_written\": %lld}}\n",
                     when, kind, client ? client : "-", id, req->method ? req->method : "-", path,
                     endpoint ? endpoint : "-", backend, status, bytes, total, queue, req->batch_size,
                     us_between(req->received_ns, req->enqueued_ns), queue,
                     us_between(req->dispatched_ns, req->answered_ns),
                     us_between(req->answered_ns, written));
    } else {
        n = snprintf(line, sizeof line,
                     "%s - - [%s] \"%s %s %s\" %d %zu \"-\" \"-\" id=%s endpoint=%s backend=%s "
                     "total_us=%lld queue_us=%lld batch=%u\n",
                     client ? client : "-", when, req->method ? req->method : "-", path,
                     strcmp(kind, "http") == 0 ? "HTTP/1.1" : "HANDLE", status, bytes, id,
                     endpoint ? endpoint : "-", backend, total, queue, req->batch_size);
    }
    /* A streamed answer: when its first piece was written (time to first
     * byte), after the fields every line has. */
    uint64_t first = req->stream ? stream_first_byte_ns(req) : 0;
    if (req->stream && n > 0 && (size_t)n < sizeof line - 64) {
        long long ttfb = us_between(req->received_ns, first);
        if (log_format == ACCESS_LOG_JSON)
            n += snprintf(line + n - 2, sizeof line - (size_t)n + 2,
                          ", \"streamed\": true, \"first_byte_us\": %lld}\n", ttfb) - 2;
        else
            n += snprintf(line + n - 1, sizeof line - (size_t)n + 1, " first_byte_us=%lld\n",
                          ttfb) - 1;
    }
    if (n > 0) append(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

void access_log_plain(const char *client, const char *method, const char *path, const char *id,
                      int status, size_t bytes)
{
    char when[64], safe_path[1024], safe_id[300], line[2048];
    wall_time(when, sizeof when, log_format == ACCESS_LOG_JSON);
    escaped(safe_path, sizeof safe_path, path);
    escaped(safe_id, sizeof safe_id, id);
    int n;
    if (log_format == ACCESS_LOG_JSON)
        n = snprintf(line, sizeof line,
                     "{\"time\": \"%s\", \"kind\": \"http\", \"client\": \"%s\", \"id\": \"%s\", "
                     "\"method\": \"%s\", \"path\": \"%s\", \"endpoint\": \"-\", \"backend\": \"-\", "
                     "\"status\": %d, \"bytes\": %zu}\n",
                     when, client ? client : "-", safe_id, method, safe_path, status, bytes);
    else
        n = snprintf(line, sizeof line,
                     "%s - - [%s] \"%s %s HTTP/1.1\" %d %zu \"-\" \"-\" id=%s endpoint=- backend=-\n",
                     client ? client : "-", when, method, safe_path, status, bytes, safe_id);
    if (n > 0) append(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}
