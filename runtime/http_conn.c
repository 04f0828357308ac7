/* http_conn.c - client connections of one I/O thread: count, limit, read
 * deadline. See http_conn.h for why the table owns each bufferevent. */
#include "http_conn.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"

struct conn {
    struct conn *prev, *next;
    struct conn_table *table;
    struct bufferevent *bev;
    struct event *deadline;
    int serving;     /* requests read and not yet answered */
    bool reading;    /* a request has begun and is not read whole */
    bool line_seen;  /* its request line was checked */
    bool over_limit; /* accepted past max_connections */
};

struct conn_table {
    struct event_base *base;
    struct conn_limits limits;
    struct conn head; /* of a circular list of every connection */
    struct event *sweep;
    const struct timeval *read_timeout; /* libevent's O(1) common timeout */
    /* bufferevent -> conn, open addressing, so that a request finds its
     * connection without a lock or a walk. */
    struct conn **slots;
    size_t cap, used;
    atomic_size_t read_timeouts, refused;
};

#define TOMBSTONE ((struct conn *)1)

static size_t slot_of(const struct conn_table *t, const struct bufferevent *bev)
{
    uintptr_t h = (uintptr_t)bev;
    h ^= h >> 17;
    h *= 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 7) & (t->cap - 1);
}

static void map_put(struct conn_table *t, struct conn *c)
{
    size_t i = slot_of(t, c->bev);
    while (t->slots[i] && t->slots[i] != TOMBSTONE) i = (i + 1) & (t->cap - 1);
    if (!t->slots[i]) t->used++;
    t->slots[i] = c;
}

static bool map_grow(struct conn_table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 256;
    struct conn **old = t->slots;
    size_t old_cap = t->cap;
    t->slots = calloc(cap, sizeof *t->slots);
    if (!t->slots) {
        t->slots = old;
        return false;
    }
    t->cap = cap;
    t->used = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i] && old[i] != TOMBSTONE) map_put(t, old[i]);
    free(old);
    return true;
}

static struct conn *map_find(const struct conn_table *t, const struct bufferevent *bev)
{
    if (!t->cap) return NULL;
    for (size_t i = slot_of(t, bev); t->slots[i]; i = (i + 1) & (t->cap - 1))
        if (t->slots[i] != TOMBSTONE && t->slots[i]->bev == bev) return t->slots[i];
    return NULL;
}

static void map_remove(struct conn_table *t, const struct conn *c)
{
    for (size_t i = slot_of(t, c->bev); t->slots[i]; i = (i + 1) & (t->cap - 1))
        if (t->slots[i] == c) {
            t->slots[i] = TOMBSTONE;
            return;
        }
}

/* evhttp clears a bufferevent's callbacks when it frees the connection. */
static bool conn_alive(const struct conn *c)
{
    bufferevent_event_cb eventcb = NULL;
    bufferevent_getcb(c->bev, NULL, NULL, &eventcb, NULL);
    return eventcb != NULL;
}

static void arm_deadline(struct conn *c)
{
    event_add(c->deadline, c->table->read_timeout);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    if (!conn_alive(c) || !(c->reading || c->over_limit)) return;
    if (c->serving > 0) {
        /* Pipelined bytes wait for the answer before evhttp reads them. */
        arm_deadline(c);
        return;
    }
    atomic_fetch_add_explicit(&c->table->read_timeouts, 1, memory_order_relaxed);
    LOG_DEBUG("closing a connection that sent no whole request in %d s",
              c->table->limits.read_timeout_s);
    /* evhttp sees the end of the stream and frees the connection itself. */
    shutdown(bufferevent_getfd(c->bev), SHUT_RDWR);
}

static const char version_refusal[] =
    "HTTP/1.1 505 HTTP Version Not Supported\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 53\r\n"
    "Connection: close\r\n\r\n"
    "{\"error\": \"only HTTP/1.0 and HTTP/1.1 are supported\"}";

/* True when the end of a request line names a version other than 1.0 and
 * 1.1. evhttp would answer such a request (and its own parse errors for it)
 * in that version: "HTTP/0.9 200", "HTTP/-1.1 400". A line without a
 * version is left to evhttp. `tail` is the line's last bytes, `whole` says
 * whether it is the whole line. */
static bool line_has_bad_version(const char *tail, size_t len, bool whole)
{
    const char *space = memrchr(tail, ' ', len);
    if (!space) {
        /* A last word longer than the tail: a version only when it is all
         * digits and dots, like an overflowing "HTTP/1555...5.1". */
        if (whole) return false;
        for (size_t i = 0; i < len; i++)
            if (!(tail[i] == '.' || (tail[i] >= '0' && tail[i] <= '9'))) return false;
        return true;
    }
    size_t n = len - (size_t)(space + 1 - tail);
    const char *version = space + 1;
    if (n < 5 || memcmp(version, "HTTP/", 5) != 0) return false;
    return !(n == 8 && (memcmp(version, "HTTP/1.1", 8) == 0 || memcmp(version, "HTTP/1.0", 8) == 0));
}

/* Runs as bytes arrive, before evhttp parses them. */
static void check_request_line(struct conn *c, struct evbuffer *buf)
{
    size_t eol_len = 0;
    struct evbuffer_ptr eol = evbuffer_search_eol(buf, NULL, &eol_len, EVBUFFER_EOL_CRLF);
    if (eol.pos < 0) return; /* not whole yet */
    c->line_seen = true;
    if (eol.pos == 0) return; /* a blank line: evhttp's to judge */
    /* Only the line's last bytes: the version is its last word. */
    char tail[256];
    size_t line_len = (size_t)eol.pos, len = line_len < sizeof tail ? line_len : sizeof tail;
    struct evbuffer_ptr from;
    if (evbuffer_ptr_set(buf, &from, line_len - len, EVBUFFER_PTR_SET) != 0 ||
        evbuffer_copyout_from(buf, &from, tail, len) != (ev_ssize_t)len)
        return;
    if (tail[len - 1] == '\r') len--;
    if (!line_has_bad_version(tail, len, line_len <= sizeof tail)) return;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    /* evhttp gets nothing to parse, then the end of the stream. The answer
     * goes straight to the socket when nothing else is being written. */
    evbuffer_drain(buf, evbuffer_get_length(buf));
    if (c->serving == 0 && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        ssize_t sent = send(fd, version_refusal, sizeof version_refusal - 1, MSG_NOSIGNAL);
        (void)sent;
    }
    shutdown(fd, SHUT_RDWR);
}

static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct conn *c = arg;
    if (info->n_added == 0) return;
    if (!c->reading) {
        c->reading = true;
        c->line_seen = false;
        arm_deadline(c);
    }
    if (!c->line_seen) check_request_line(c, buf);
}

static void on_request_complete(struct evhttp_request *ev, void *arg)
{
    (void)ev;
    struct conn *c = arg;
    c->serving--;
}

static void conn_free(struct conn *c)
{
    struct conn_table *t = c->table;
    c->prev->next = c->next;
    c->next->prev = c->prev;
    map_remove(t, c);
    event_free(c->deadline);
    bufferevent_decref(c->bev);
    atomic_fetch_sub_explicit(t->limits.open, 1, memory_order_relaxed);
    free(c);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn_table *t = arg;
    for (struct conn *c = t->head.next, *next; c != &t->head; c = next) {
        next = c->next;
        if (!conn_alive(c)) conn_free(c);
    }
}

struct conn_table *conn_table_new(struct event_base *base, const struct conn_limits *limits)
{
    struct conn_table *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->base = base;
    t->limits = *limits;
    t->head.prev = t->head.next = &t->head;
    t->sweep = event_new(base, -1, EV_PERSIST, on_sweep, t);
    /* Every connection's deadline has the same length: a queue instead of
     * the timer heap, so that arming one per request costs O(1). */
    struct timeval read_timeout = {limits->read_timeout_s, 0};
    t->read_timeout = event_base_init_common_timeout(base, &read_timeout);
    struct timeval second = {1, 0};
    if (!t->sweep || !t->read_timeout || event_add(t->sweep, &second) != 0 || !map_grow(t)) {
        conn_table_free(t);
        return NULL;
    }
    return t;
}

struct bufferevent *conn_table_accept(struct event_base *base, void *arg)
{
    struct conn_table *t = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    struct conn *c = calloc(1, sizeof *c);
    if (!bev || !c || ((t->used + 1) * 2 > t->cap && !map_grow(t)) ||
        !(c->deadline = evtimer_new(base, on_deadline, c)) ||
        !evbuffer_add_cb(bufferevent_get_input(bev), on_input, c)) {
        /* evhttp makes its own bufferevent when given none; this one
         * connection goes uncounted rather than refused. */
        if (c && c->deadline) event_free(c->deadline);
        free(c);
        if (bev) bufferevent_free(bev);
        return NULL;
    }
    c->table = t;
    c->bev = bev;
    bufferevent_incref(bev); /* evhttp frees it; the sweep notices */
    c->prev = t->head.prev;
    c->next = &t->head;
    c->prev->next = c;
    t->head.prev = c;
    map_put(t, c);
    size_t open = atomic_fetch_add_explicit(t->limits.open, 1, memory_order_relaxed) + 1;
    if (t->limits.max_connections && open > t->limits.max_connections) {
        /* Refused with an answer on its first request, and closed by the
         * read deadline if it never sends one. */
        c->over_limit = true;
        arm_deadline(c);
    }
    return bev;
}

bool conn_request_read(struct conn_table *t, struct evhttp_request *ev)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(ev);
    struct conn *c = evcon ? map_find(t, evhttp_connection_get_bufferevent(evcon)) : NULL;
    if (!c) return true;
    c->reading = false;
    event_del(c->deadline);
    c->serving++;
    evhttp_request_set_on_complete_cb(ev, on_request_complete, c);
    if (c->over_limit) atomic_fetch_add_explicit(&t->refused, 1, memory_order_relaxed);
    return !c->over_limit;
}

size_t conn_table_read_timeouts(const struct conn_table *t)
{
    return atomic_load_explicit(&t->read_timeouts, memory_order_relaxed);
}

size_t conn_table_refused(const struct conn_table *t)
{
    return atomic_load_explicit(&t->refused, memory_order_relaxed);
}

void conn_table_free(struct conn_table *t)
{
    if (!t) return;
    while (t->head.next != &t->head) conn_free(t->head.next);
    if (t->sweep) event_free(t->sweep);
    free(t->slots);
    free(t);
}
