/* load.c - the load generator's event loops (see load.h). */
#include "load.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

enum parse_state { READ_HEAD, READ_BODY, READ_CHUNK_SIZE, READ_CHUNK_DATA, READ_TRAILER };

struct worker;

struct conn {
    struct worker *w;
    int fd;
    bool connected;
    bool busy;             /* a request is out */
    struct event *readable;
    struct event *writable;
    struct event *timer;   /* reconnect delay */
    struct evbuffer *in;
    const char *out;
    size_t out_left;
    uint64_t intended_ns;  /* latency starts here */
    uint64_t sent_ns;      /* the timeout counts from here */
    enum parse_state state;
    uint64_t body_left;
    int status;
    bool close_after;
    bool chunked;
    uint64_t last_chunk_ns; /* 0: no chunk of this answer yet */
};

struct worker {
    const struct load_config *cfg;
    pthread_t thread;
    struct event_base *base;
    struct conn *conns;
    int conn_count;
    struct event *schedule; /* open loop: the next intended send */
    struct event *second;   /* progress, end of run */
    uint64_t start_ns, record_from_ns, end_ns;
    uint64_t quota;         /* -n: requests this worker records; 0: no limit */
    uint64_t started;       /* requests started while recording */
    size_t next_request;
    double interval_ns;     /* open loop */
    uint64_t sends_scheduled;
    uint64_t *pending;      /* intended times waiting for a free connection */
    size_t pending_head, pending_count, pending_cap;
    struct load_result result;
    atomic_ulong done_now;  /* for the progress line */
    atomic_ulong errors_now;
    atomic_ulong p99_now;
    bool stopping;
    uint64_t finished_ns;
};

static void conn_open(struct conn *c);
static void conn_send(struct conn *c, uint64_t intended_ns);

static bool recording(struct worker *w, uint64_t at) { return at >= w->record_from_ns; }

static bool quota_left(struct worker *w)
{
    return !w->quota || w->started < w->quota;
}

static void check_done(struct worker *w)
{
    if (!w->quota || w->started < w->quota) return;
    for (int i = 0; i < w->conn_count; i++)
        if (w->conns[i].busy) return;
    w->stopping = true;
    event_base_loopbreak(w->base);
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0) {
        event_del(c->readable);
        event_del(c->writable);
        close(c->fd);
        c->fd = -1;
    }
    event_del(c->timer);
    evbuffer_drain(c->in, evbuffer_get_length(c->in));
    c->connected = false;
    c->busy = false;
}

static void on_reconnect(evutil_socket_t fd, short what, void *arg);

/* A connection failed; count it, then come back in 10 ms. */
static void conn_fail(struct conn *c, uint64_t *counter)
{
    struct worker *w = c->w;
    if (c->busy && recording(w, c->intended_ns)) {
        (*counter)++;
        atomic_fetch_add_explicit(&w->errors_now, 1, memory_order_relaxed);
    } else if (!c->busy && counter == &w->result.errors_connect && recording(w, now_ns())) {
        (*counter)++;
        atomic_fetch_add_explicit(&w->errors_now, 1, memory_order_relaxed);
        /* With -n, a connection that cannot be made uses up a request: a
         * server that refuses every connection must not make the run
         * endless. */
        if (w->quota) w->started++;
    }
    conn_close(c);
    check_done(w);
    if (w->stopping) return;
    event_assign(c->timer, w->base, -1, 0, on_reconnect, c);
    struct timeval tv = {0, 10000};
    evtimer_add(c->timer, &tv);
}

static void next_request(struct conn *c)
{
    struct worker *w = c->w;
    if (w->stopping) return;
    if (w->cfg->rate > 0) {
        if (w->pending_count) {
            uint64_t intended = w->pending[w->pending_head];
            w->pending_head = (w->pending_head + 1) % w->pending_cap;
            w->pending_count--;
            conn_send(c, intended);
        }
        return;
    }
    if (quota_left(w)) conn_send(c, now_ns());
    else check_done(w);
}

static void response_done(struct conn *c)
{
    struct worker *w = c->w;
    uint64_t now = now_ns();
    c->busy = false;
    if (recording(w, c->intended_ns) && (!w->end_ns || now <= w->end_ns)) {
        struct load_result *r = &w->result;
        lat_record(&r->latency, (now - c->intended_ns) / 1000);
        r->requests++;
        if (c->chunked) r->streams++;
        if (c->status >= 100 && c->status < 600) r->by_status[c->status]++;
        atomic_fetch_add_explicit(&w->done_now, 1, memory_order_relaxed);
        if (c->status < 200 || c->status >= 400)
            atomic_fetch_add_explicit(&w->errors_now, 1, memory_order_relaxed);
    }
    if (c->close_after) {
        conn_close(c);
        conn_open(c);
        return;
    }
    next_request(c);
    check_done(w);
}

/* A chunk of a streamed answer has begun to arrive. */
static void note_chunk(struct conn *c)
{
    struct worker *w = c->w;
    uint64_t now = now_ns();
    if (recording(w, c->intended_ns) && (!w->end_ns || now <= w->end_ns)) {
        struct load_result *r = &w->result;
        if (c->last_chunk_ns)
            lat_record(&r->between_chunks, (now - c->last_chunk_ns) / 1000);
        else
            lat_record(&r->first_byte, (now - c->intended_ns) / 1000);
        r->chunks++;
    }
    c->last_chunk_ns = now;
}

/* Parses as much of the answer as has arrived. Returns -1 on a malformed
 * answer. */
static int parse(struct conn *c)
{
    for (;;) {
        size_t avail = evbuffer_get_length(c->in);
        if (c->state == READ_HEAD) {
            struct evbuffer_ptr end = evbuffer_search(c->in, "\r\n\r\n", 4, NULL);
            if (end.pos < 0) return avail > 65536 ? -1 : 0;
            size_t head_len = (size_t)end.pos + 4;
            char *head = (char *)evbuffer_pullup(c->in, (ssize_t)head_len);
            if (head_len < 12 || strncmp(head, "HTTP/1.", 7) != 0) return -1;
            c->status = atoi(head + 9);
            c->body_left = 0;
            c->close_after = head[7] == '0';
            bool chunked = false;
            for (char *line = strstr(head, "\r\n"); line && line + 2 < head + head_len;
                 line = strstr(line + 2, "\r\n")) {
                char *h = line + 2;
                if (strncasecmp(h, "Content-Length:", 15) == 0)
                    c->body_left = strtoull(h + 15, NULL, 10);
                else if (strncasecmp(h, "Transfer-Encoding:", 18) == 0 && strstr(h, "chunked") &&
                         strstr(h, "chunked") < strstr(h, "\r\n"))
                    chunked = true;
                else if (strncasecmp(h, "Connection:", 11) == 0) {
                    char *v = h + 11;
                    while (*v == ' ') v++;
                    if (strncasecmp(v, "close", 5) == 0) c->close_after = true;
                    if (strncasecmp(v, "keep-alive", 10) == 0) c->close_after = false;
                }
            }
            evbuffer_drain(c->in, head_len);
            c->state = chunked ? READ_CHUNK_SIZE : READ_BODY;
            c->chunked = chunked;
            c->last_chunk_ns = 0;
            continue;
        }
        if (c->state == READ_BODY || c->state == READ_CHUNK_DATA) {
            size_t take = avail < c->body_left ? avail : (size_t)c->body_left;
            evbuffer_drain(c->in, take);
            c->body_left -= take;
            if (c->body_left) return 0;
            if (c->state == READ_BODY) {
                c->state = READ_HEAD;
                response_done(c);
                if (!c->busy || c->fd < 0) return 1;
                continue; /* pipelined data is not expected; keep parsing anyway */
            }
            c->state = READ_CHUNK_SIZE;
            continue;
        }
        /* Chunk sizes and trailers are lines. */
        size_t line_len;
        char *line = evbuffer_readln(c->in, &line_len, EVBUFFER_EOL_CRLF);
        if (!line) return avail > 65536 ? -1 : 0;
        if (c->state == READ_CHUNK_SIZE) {
            char *end;
            unsigned long long size = strtoull(line, &end, 16);
            bool ok = end != line;
            free(line);
            if (!ok) return -1;
            if (size == 0) {
                c->state = READ_TRAILER;
            } else {
                c->body_left = size + 2; /* the data and its CRLF */
                c->state = READ_CHUNK_DATA;
                note_chunk(c);
            }
            continue;
        }
        bool empty = line_len == 0;
        free(line);
        if (empty) {
            c->state = READ_HEAD;
            response_done(c);
            return 1;
        }
    }
}

/* Reads into the connection's buffer with plain read(2): evbuffer_read
 * would first ask the kernel how much is there (an ioctl per read). */
static ssize_t read_some(struct conn *c, int fd, size_t want)
{
    struct evbuffer_iovec vec;
    if (evbuffer_reserve_space(c->in, (ev_ssize_t)want, &vec, 1) < 1) return -1;
    ssize_t n = read(fd, vec.iov_base, vec.iov_len < want ? vec.iov_len : want);
    vec.iov_len = n > 0 ? (size_t)n : 0;
    evbuffer_commit_space(c->in, &vec, 1);
    return n;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct conn *c = arg;
    struct worker *w = c->w;
    const size_t chunk = 16384;
    for (;;) {
        ssize_t n = read_some(c, fd, chunk);
        if (n > 0) {
            if (recording(w, c->intended_ns)) w->result.bytes += (uint64_t)n;
            if (parse(c) < 0) {
                conn_fail(c, &w->result.errors_read);
                return;
            }
            if (c->fd != fd) return; /* closed, or reopened on a new socket */
            if ((size_t)n < chunk) return; /* drained: no second read to learn EAGAIN */
            continue;
        }
        if (n == 0) { /* closed by the server */
            if (c->busy) {
                conn_fail(c, &w->result.errors_read);
            } else {
                conn_close(c);
                conn_open(c);
            }
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        conn_fail(c, c->connected ? &w->result.errors_read : &w->result.errors_connect);
        return;
    }
}

static void flush_out(struct conn *c)
{
    while (c->out_left) {
        ssize_t n = send(c->fd, c->out, c->out_left, MSG_NOSIGNAL);
        if (n > 0) {
            c->out += n;
            c->out_left -= (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            event_add(c->writable, NULL);
            return;
        }
        conn_fail(c, &c->w->result.errors_read);
        return;
    }
}

static void conn_send(struct conn *c, uint64_t intended_ns)
{
    struct worker *w = c->w;
    const struct load_config *cfg = w->cfg;
    size_t i = w->next_request++ % cfg->request_count;
    c->out = cfg->requests[i];
    c->out_left = cfg->request_lens[i];
    c->intended_ns = intended_ns;
    c->busy = true;
    c->state = READ_HEAD;
    uint64_t now = now_ns();
    if (recording(w, intended_ns)) {
        w->started++;
        if (cfg->rate > 0 && now > intended_ns + 1000000) w->result.late++;
    }
    c->sent_ns = now;
    flush_out(c);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct conn *c = arg;
    if (!c->connected) {
        int error = 0;
        socklen_t len = sizeof error;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len);
        if (error) {
            conn_fail(c, &c->w->result.errors_connect);
            return;
        }
        c->connected = true;
        event_add(c->readable, NULL);
        next_request(c);
        return;
    }
    flush_out(c);
}

static void conn_open(struct conn *c)
{
    struct worker *w = c->w;
    if (w->stopping) return;
    c->fd = socket(w->cfg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        conn_fail(c, &w->result.errors_connect);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    event_assign(c->readable, w->base, c->fd, EV_READ | EV_PERSIST, on_readable, c);
    event_assign(c->writable, w->base, c->fd, EV_WRITE, on_writable, c);
    c->connected = false;
    if (connect(c->fd, (const struct sockaddr *)&w->cfg->addr, w->cfg->addr_len) != 0 &&
        errno != EINPROGRESS) {
        conn_fail(c, &w->result.errors_connect);
        return;
    }
    event_add(c->writable, NULL);
}

static void on_reconnect(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    conn_open(arg);
}

static void schedule_next(struct worker *w);

/* Open loop: send everything whose time has come, on an idle connection or
 * queued for the next one that frees up. */
static void on_schedule(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct worker *w = arg;
    uint64_t now = now_ns();
    for (;;) {
        uint64_t intended = w->start_ns + (uint64_t)((double)w->sends_scheduled * w->interval_ns);
        if (intended > now || (w->quota && w->sends_scheduled >= w->quota)) break;
        if (intended >= w->end_ns && w->end_ns) break;
        w->sends_scheduled++;
        struct conn *idle = NULL;
        for (int i = 0; i < w->conn_count && !idle; i++)
            if (w->conns[i].connected && !w->conns[i].busy) idle = &w->conns[i];
        if (idle) {
            conn_send(idle, intended);
        } else {
            if (w->pending_count == w->pending_cap) {
                size_t cap = w->pending_cap ? w->pending_cap * 2 : 1024;
                uint64_t *grown = malloc(cap * sizeof *grown);
                if (!grown) break;
                for (size_t i = 0; i < w->pending_count; i++)
                    grown[i] = w->pending[(w->pending_head + i) % (w->pending_cap ? w->pending_cap : 1)];
                free(w->pending);
                w->pending = grown;
                w->pending_head = 0;
                w->pending_cap = cap;
            }
            w->pending[(w->pending_head + w->pending_count) % w->pending_cap] = intended;
            w->pending_count++;
        }
    }
    schedule_next(w);
}

static void schedule_next(struct worker *w)
{
    if (w->quota && w->sends_scheduled >= w->quota) return;
    uint64_t next = w->start_ns + (uint64_t)((double)w->sends_scheduled * w->interval_ns);
    uint64_t now = now_ns();
    uint64_t wait = next > now ? next - now : 0;
    struct timeval tv = {(time_t)(wait / 1000000000u), (suseconds_t)(wait % 1000000000u / 1000)};
    evtimer_add(w->schedule, &tv);
}

static void on_second(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct worker *w = arg;
    uint64_t now = now_ns();
    /* Timeouts are checked here, ten times a second, rather than with a
     * timer per request: that would cost two timer-heap operations each. */
    for (int i = 0; w->cfg->timeout_ns && i < w->conn_count; i++) {
        struct conn *c = &w->conns[i];
        if (c->busy && now - c->sent_ns > w->cfg->timeout_ns) conn_fail(c, &w->result.errors_timeout);
    }
    atomic_store_explicit(&w->p99_now, lat_quantile(&w->result.latency, 0.99), memory_order_relaxed);
    if (w->end_ns && now >= w->end_ns) {
        w->stopping = true;
        event_base_loopbreak(w->base);
        return;
    }
    uint64_t wait = w->end_ns && w->end_ns - now < 100000000u ? w->end_ns - now : 100000000u;
    struct timeval tv = {0, (suseconds_t)(wait / 1000)};
    evtimer_add(w->second, &tv);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < w->conn_count; i++) conn_open(&w->conns[i]);
    if (w->cfg->rate > 0) schedule_next(w);
    struct timeval tv = {0, 1000};
    evtimer_add(w->second, &tv);
    event_base_dispatch(w->base);
    w->finished_ns = now_ns();
    /* Open loop: what never got a connection still counts against the server. */
    w->result.unsent = w->pending_count;
    for (size_t i = 0; i < w->pending_count; i++) {
        uint64_t intended = w->pending[(w->pending_head + i) % w->pending_cap];
        if (recording(w, intended)) lat_record(&w->result.latency, (now_ns() - intended) / 1000);
    }
    return NULL;
}

static void worker_free(struct worker *w)
{
    for (int i = 0; w->conns && i < w->conn_count; i++) {
        struct conn *c = &w->conns[i];
        if (c->fd >= 0) close(c->fd);
        if (c->readable) event_free(c->readable);
        if (c->writable) event_free(c->writable);
        if (c->timer) event_free(c->timer);
        if (c->in) evbuffer_free(c->in);
    }
    free(w->conns);
    free(w->pending);
    if (w->schedule) event_free(w->schedule);
    if (w->second) event_free(w->second);
    if (w->base) event_base_free(w->base);
}

static void progress_line(struct worker *workers, int n, uint64_t start, bool final)
{
    uint64_t done = 0, errors = 0, p99 = 0;
    for (int i = 0; i < n; i++) {
        done += atomic_load(&workers[i].done_now);
        errors += atomic_load(&workers[i].errors_now);
        uint64_t p = atomic_load(&workers[i].p99_now);
        if (p > p99) p99 = p;
    }
    double elapsed = (double)(now_ns() - start) / 1e9;
    fprintf(stderr, "\r%6.1fs  %10.0f req/s  p99 %8.2f ms  errors %llu   %s", elapsed,
            elapsed > 0 ? (double)done / elapsed : 0, (double)p99 / 1000.0,
            (unsigned long long)errors, final ? "\n" : "");
    fflush(stderr);
}

bool load_run(const struct load_config *cfg, struct load_result *out, char *err, size_t errlen)
{
    int threads = cfg->threads < 1 ? 1 : cfg->threads;
    if (threads > cfg->connections) threads = cfg->connections;
    struct worker *workers = calloc((size_t)threads, sizeof *workers);
    if (!workers) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    uint64_t start = now_ns() + 20000000u; /* 20 ms to set up every loop */
    bool ok = true;
    for (int t = 0; t < threads && ok; t++) {
        struct worker *w = &workers[t];
        w->cfg = cfg;
        w->conn_count = cfg->connections / threads + (t < cfg->connections % threads);
        /* Precise timers (timerfd): an open-loop schedule needs better
         * than epoll's millisecond timeouts. */
        struct event_config *ec = event_config_new();
        if (ec) event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
        w->base = ec ? event_base_new_with_config(ec) : NULL;
        if (ec) event_config_free(ec);
        w->conns = calloc((size_t)w->conn_count, sizeof *w->conns);
        w->schedule = w->base ? evtimer_new(w->base, on_schedule, w) : NULL;
        w->second = w->base ? evtimer_new(w->base, on_second, w) : NULL;
        ok = w->base && w->conns && w->schedule && w->second;
        for (int i = 0; ok && i < w->conn_count; i++) {
            struct conn *c = &w->conns[i];
            c->w = w;
            c->fd = -1;
            c->in = evbuffer_new();
            c->readable = event_new(w->base, -1, 0, on_readable, c);
            c->writable = event_new(w->base, -1, 0, on_writable, c);
            c->timer = evtimer_new(w->base, on_reconnect, c);
            ok = c->in && c->readable && c->writable && c->timer;
        }
        w->start_ns = start;
        w->record_from_ns = start + cfg->warmup_ns;
        w->end_ns = cfg->duration_ns ? w->record_from_ns + cfg->duration_ns : 0;
        if (cfg->count)
            w->quota = cfg->count / (uint64_t)threads + ((uint64_t)t < cfg->count % (uint64_t)threads);
        if (cfg->rate > 0) w->interval_ns = 1e9 * threads / cfg->rate;
    }
    if (!ok) {
        for (int t = 0; t < threads; t++) worker_free(&workers[t]);
        free(workers);
        snprintf(err, errlen, "cannot set up %d connections", cfg->connections);
        return false;
    }
    while (now_ns() < start) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    for (int t = 0; t < threads; t++) pthread_create(&workers[t].thread, NULL, worker_main, &workers[t]);
    bool *joined = calloc((size_t)threads, sizeof *joined);
    for (int running = threads; cfg->progress && joined && running > 0;) {
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
        for (int t = 0; t < threads; t++)
            if (!joined[t] && pthread_tryjoin_np(workers[t].thread, NULL) == 0) {
                joined[t] = true;
                running--;
            }
        progress_line(workers, threads, start + cfg->warmup_ns, running == 0);
    }
    uint64_t finished = 0;
    memset(out, 0, sizeof *out);
    for (int t = 0; t < threads; t++) {
        struct worker *w = &workers[t];
        if (!joined || !joined[t]) pthread_join(w->thread, NULL);
        if (w->finished_ns > finished) finished = w->finished_ns;
        struct load_result *r = &w->result;
        lat_merge(&out->latency, &r->latency);
        lat_merge(&out->first_byte, &r->first_byte);
        lat_merge(&out->between_chunks, &r->between_chunks);
        out->chunks += r->chunks;
        out->streams += r->streams;
        out->requests += r->requests;
        out->bytes += r->bytes;
        out->errors_connect += r->errors_connect;
        out->errors_read += r->errors_read;
        out->errors_timeout += r->errors_timeout;
        out->late += r->late;
        out->unsent += r->unsent;
        for (int s = 0; s < 600; s++) out->by_status[s] += r->by_status[s];
        worker_free(w);
    }
    uint64_t from = start + cfg->warmup_ns;
    out->duration_s = cfg->duration_ns && !cfg->count ? (double)cfg->duration_ns / 1e9
                                                      : (double)(finished - from) / 1e9;
    free(joined);
    free(workers);
    return true;
}
