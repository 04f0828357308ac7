/* http1_conn.c - the HTTP/1.1 connection layer (see http1_conn.h). */
#include "http1_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdalign.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "request.h"

/* Answers a connection may have pending before it is read further: enough
 * for clients that pipeline, small enough that a flood costs nothing. */
#define PIPELINE_DEPTH 16
/* Unsent output over which a connection is not read further, and under
 * which it is read again. */
#define OUTPUT_HIGH (256u * 1024)
#define OUTPUT_LOW (64u * 1024)
/* Bytes read from a socket at once, into the thread's one buffer. */
#define READ_CHUNK (64u * 1024)
/* Exchanges kept for reuse per thread. */
#define SPARE_EXCHANGES 64
/* How long accepting pauses when the process is out of descriptors. */
#define ACCEPT_PAUSE_MS 200
#define ACCEPT_LOG_EVERY_S 5

struct conn;

enum timer_kind { TIMER_NONE, TIMER_READ, TIMER_WRITE, TIMER_IDLE };

struct http1_exchange {
    struct http1_exchange *next; /* the connection's queue, in request order */
    struct conn *conn;           /* NULL once the connection is gone */
    /* The head: target, then NUL-terminated names and values. */
    char *head;
    size_t head_len, head_cap;
    uint32_t *fields; /* offsets in head: name, value, name, value ... */
    size_t field_count, field_cap;
    size_t head_size;  /* as sent, for the 431 limit */
    const char *method;
    bool head_only;    /* HEAD: the answer has no body */
    bool keep_alive;   /* as llhttp judged the request */
    bool http10;
    bool complete;     /* read whole and handed to the front end */
    bool answered;
    bool close_after;
    bool split;        /* the target is split into path and query */
    bool root_path;    /* an absolute-form target without a path */
    bool streaming;    /* its answer's head is out; chunks follow until the end */
    uint32_t path_off, query_off;
    /* The body, in a block that carries its budget reservation. */
    char *body;
    size_t body_len, body_cap;
    /* An answer ready while an earlier one is not: written in turn. */
    struct evbuffer *answer;
    void *owner; /* the front end's (http1_set_owner) */
};

struct conn {
    struct conn *prev, *next;
    struct http1 *h;
    int fd;
    struct event read_ev, write_ev, timer_ev;
    llhttp_t parser;
    struct evbuffer *out;
    struct http1_exchange *queue, *queue_tail; /* pending answers, oldest first */
    struct http1_exchange *parsing;            /* the request being read */
    unsigned pending;                          /* exchanges in the queue */
    char *leftover;    /* read, not parsed: the parser was paused */
    size_t leftover_len;
    int timer;         /* enum timer_kind: the deadline armed */
    unsigned long begun;     /* requests begun on this connection */
    unsigned long timer_for; /* the one a read deadline is for */
    bool reading;      /* read_ev is added */
    bool writing;      /* write_ev is added */
    bool paused;       /* the parser is paused (depth or output) */
    bool closing;      /* the last answer is out: close once written */
    bool over_limit;
    bool want_continue; /* send 100 Continue if the body is not here yet */
    const char *feed_end; /* the end of the bytes being parsed */
    bool input_done;   /* nothing more is read: last request, refusal, EOF */
    bool refused;      /* the layer answered a refusal: the parser's error is ours */
    bool broken;       /* the socket failed: close without writing */
    bool lingering;    /* written and shut down; reading until the client closes */
    int busy;          /* inside a handler of this connection: no close yet */
    struct sockaddr_storage peer;
    char peer_text[INET6_ADDRSTRLEN];
};

struct http1 {
    struct event_base *base;
    int listen_fd;
    struct event accept_ev, accept_pause_ev;
    bool accepting;
    time_t accept_logged_at;
    size_t accept_pauses;
    struct http1_limits limits;
    const struct http1_handler *handler;
    void *ctx;
    const struct timeval *read_timeout, *idle_timeout; /* common timeouts */
    struct conn conns; /* head of a circular list */
    struct http1_exchange *spare;
    size_t spare_count;
    char *read_buf;
    time_t date_at;
    char date[40]; /* "Date: ...\r\n" */
    atomic_size_t read_timeouts, refused;
    atomic_size_t open_here; /* connections of this I/O thread */
};

/* ---- The body budget (process-wide) ---- */

static atomic_size_t body_memory_used;
static size_t body_memory_limit = SIZE_MAX;

void http1_body_memory_set_limit(size_t bytes) { body_memory_limit = bytes ? bytes : SIZE_MAX; }
size_t http1_body_memory_limit(void) { return body_memory_limit == SIZE_MAX ? 0 : body_memory_limit; }
size_t http1_body_memory_in_use(void) { return atomic_load(&body_memory_used); }

static bool budget_take(size_t n)
{
    size_t used = atomic_fetch_add_explicit(&body_memory_used, n, memory_order_relaxed) + n;
    if (used <= body_memory_limit) return true;
    atomic_fetch_sub_explicit(&body_memory_used, n, memory_order_relaxed);
    return false;
}

static void budget_give(size_t n) { atomic_fetch_sub_explicit(&body_memory_used, n, memory_order_relaxed); }

/* A body the whole budget could never hold: waiting would not help. */
#define TOO_LARGE_FOR_BUDGET "request body larger than all of --max-body-memory"

/* A body lives in a block whose header records what it took of the budget. */
struct body_block {
    size_t reserved;
    alignas(max_align_t) char data[];
};

static struct body_block *block_of(void *data)
{
    return (struct body_block *)(void *)((char *)data - offsetof(struct body_block, data));
}

/* Grows `ex`'s body to hold `cap` bytes; false when the budget or memory
 * is out. */
static bool body_reserve(struct http1_exchange *ex, size_t cap)
{
    if (cap <= ex->body_cap) return true;
    size_t old = ex->body ? block_of(ex->body)->reserved : 0;
    if (!budget_take(cap - old)) return false;
    struct body_block *b = realloc(ex->body ? block_of(ex->body) : NULL, sizeof *b + cap);
    if (!b) {
        budget_give(cap - old);
        return false;
    }
    b->reserved = cap;
    ex->body = b->data;
    ex->body_cap = cap;
    return true;
}

void http1_body_free(void *body)
{
    if (!body) return;
    struct body_block *b = block_of(body);
    budget_give(b->reserved);
    free(b);
}

/* ---- Exchanges ---- */

static struct http1_exchange *exchange_new(struct conn *c)
{
    struct http1 *h = c->h;
    struct http1_exchange *ex = h->spare;
    if (ex) {
        h->spare = ex->next;
        h->spare_count--;
    } else if (!(ex = calloc(1, sizeof *ex))) {
        return NULL;
    }
    char *head = ex->head;
    size_t head_cap = ex->head_cap, field_cap = ex->field_cap;
    uint32_t *fields = ex->fields;
    memset(ex, 0, sizeof *ex);
    ex->head = head;
    ex->head_cap = head_cap;
    ex->fields = fields;
    ex->field_cap = field_cap;
    ex->conn = c;
    return ex;
}

static void exchange_free(struct http1_exchange *ex)
{
    http1_body_free(ex->body);
    ex->body = NULL;
    if (ex->answer) evbuffer_free(ex->answer);
    ex->answer = NULL;
    struct conn *c = ex->conn;
    /* Kept for reuse while its thread's layer lives, and small. */
    if (c && c->h->spare_count < SPARE_EXCHANGES && ex->head_cap <= 8192) {
        ex->next = c->h->spare;
        c->h->spare = ex;
        c->h->spare_count++;
        return;
    }
    free(ex->head);
    free(ex->fields);
    free(ex);
}

static bool head_append(struct http1_exchange *ex, const char *at, size_t len)
{
    if (ex->head_len + len + 1 > ex->head_cap) {
        size_t cap = ex->head_cap ? ex->head_cap : 512;
        while (cap < ex->head_len + len + 1) cap *= 2;
        char *grown = realloc(ex->head, cap);
        if (!grown) return false;
        ex->head = grown;
        ex->head_cap = cap;
    }
    memcpy(ex->head + ex->head_len, at, len);
    ex->head_len += len;
    return true;
}

static bool head_mark(struct http1_exchange *ex)
{
    if (ex->field_count == ex->field_cap) {
        size_t cap = ex->field_cap ? ex->field_cap * 2 : 32;
        uint32_t *grown = realloc(ex->fields, cap * sizeof *grown);
        if (!grown) return false;
        ex->fields = grown;
        ex->field_cap = cap;
    }
    ex->fields[ex->field_count++] = (uint32_t)ex->head_len;
    return true;
}

/* ---- Output ---- */

static void conn_close(struct conn *c);
static void conn_after_io(struct conn *c);

static const char *date_header(struct http1 *h)
{
    time_t now = time(NULL);
    if (now != h->date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(h->date, sizeof h->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        h->date_at = now;
    }
    return h->date;
}

static const char *http1_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 508: return "Loop Detected";
    default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

/* The head of an answer is built here and added to the output at once. */
struct head_writer {
    struct evbuffer *out;
    size_t len;
    char buf[1024];
};

static void head_put(struct head_writer *w, const char *s, size_t n)
{
    if (w->len + n > sizeof w->buf) {
        evbuffer_add(w->out, w->buf, w->len);
        w->len = 0;
        if (n > sizeof w->buf) {
            evbuffer_add(w->out, s, n);
            return;
        }
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

static void head_puts(struct head_writer *w, const char *s) { head_put(w, s, strlen(s)); }

static void head_header(struct head_writer *w, const char *name, const char *value)
{
    head_puts(w, name);
    head_put(w, ": ", 2);
    head_puts(w, value);
    head_put(w, "\r\n", 2);
}

static void free_by_reference(const void *data, size_t len, void *extra)
{
    (void)len;
    union {
        void (*fn)(void *);
        void *ptr;
    } box = {.ptr = extra};
    box.fn((void *)data);
}

/* Writes v in decimal to out (at least 21 bytes); returns its length.
 * The answer head is on every request's path, where snprintf's format
 * machinery cost a tenth of the instructions. */
static size_t format_decimal(char *out, size_t v)
{
    char reversed[24];
    size_t n = 0;
    do {
        reversed[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) out[i] = reversed[n - 1 - i];
    return n;
}

/* Writes status line, headers and body (none for HEAD) to `out`. */
static void write_answer(struct evbuffer *out, struct http1 *h, const struct http1_exchange *ex,
                         const struct http1_answer *a, bool close, bool chunked)
{
    struct head_writer w = {.out = out};
    char digits[24];
    head_put(&w, "HTTP/1.1 ", 9);
    head_put(&w, digits, format_decimal(digits, a->status > 0 ? (size_t)a->status : 500));
    head_put(&w, " ", 1);
    head_puts(&w, http1_reason(a->status));
    head_put(&w, "\r\n", 2);
    head_puts(&w, date_header(h));
    if (a->content_type) head_header(&w, "Content-Type", a->content_type);
    if (chunked) {
        head_puts(&w, "Transfer-Encoding: chunked\r\n");
    } else {
        head_put(&w, "Content-Length: ", 16);
        head_put(&w, digits, format_decimal(digits, a->body_len));
        head_put(&w, "\r\n", 2);
    }
    if (a->request_id) head_header(&w, "X-Request-ID", a->request_id);
    if (a->allow) head_header(&w, "Allow", a->allow);
    for (size_t i = 0; i < a->header_count; i++)
        head_header(&w, a->headers[i].name, a->headers[i].value);
    if (close)
        head_puts(&w, "Connection: close\r\n");
    else if (ex->http10)
        head_puts(&w, "Connection: keep-alive\r\n");
    head_put(&w, "\r\n", 2);
    evbuffer_add(out, w.buf, w.len);
    if (chunked) return;

    void *owned = a->free_body ? (void *)a->body : NULL;
    if (a->body_len && !ex->head_only) {
        union {
            void (*fn)(void *);
            void *ptr;
        } box = {.fn = a->free_body};
        /* A handed-over body is written from where it is (zero copy) and
         * freed once written. */
        if (owned && evbuffer_add_reference(out, a->body, a->body_len, free_by_reference,
                                            box.ptr) == 0)
            return;
        evbuffer_add(out, a->body, a->body_len);
    }
    if (owned) a->free_body(owned);
}

/* ---- Connections ---- */

static void conn_after_io(struct conn *c);

/* Moves the answers that are next in order to the connection's output. */
static void conn_release_answered(struct conn *c)
{
    while (c->queue && c->queue->answered) {
        struct http1_exchange *ex = c->queue;
        if (ex->answer) evbuffer_add_buffer(c->out, ex->answer);
        c->queue = ex->next;
        if (!c->queue) c->queue_tail = NULL;
        c->pending--;
        bool close = ex->close_after;
        exchange_free(ex);
        if (close) {
            /* Nothing after a closing answer is read or sent. */
            c->closing = true;
            c->input_done = true;
            break;
        }
    }
    /* A stream next in order: what it wrote while waiting goes out, and
     * its next pieces go straight to the output. */
    if (!c->closing && c->queue && c->queue->streaming && c->queue->answer)
        evbuffer_add_buffer(c->out, c->queue->answer);
}

/* ---- Streamed answers ---- */

bool http1_can_stream(const struct http1_exchange *ex) { return !ex->http10 && !ex->head_only; }

/* Where the exchange's bytes go now: the output when it is next in order,
 * else its own buffer (NULL: nowhere, the connection is gone or closing). */
static struct evbuffer *stream_target(struct http1_exchange *ex)
{
    struct conn *c = ex->conn;
    if (!c || c->closing) return NULL;
    if (c->queue == ex) return c->out;
    if (!ex->answer) ex->answer = evbuffer_new();
    return ex->answer;
}

void http1_stream_begin(struct http1_exchange *ex, const struct http1_answer *head)
{
    struct evbuffer *out = stream_target(ex);
    ex->streaming = true;
    ex->close_after = head->close || !ex->keep_alive;
    if (!out) return;
    write_answer(out, ex->conn->h, ex, head, ex->close_after, true);
    if (!ex->conn->busy) conn_after_io(ex->conn);
}

void http1_stream_write(struct http1_exchange *ex, struct evbuffer *data)
{
    size_t len = evbuffer_get_length(data);
    struct evbuffer *out = stream_target(ex);
    if (!out || !len) {
        evbuffer_drain(data, len);
        return;
    }
    char size[24];
    int n = snprintf(size, sizeof size, "%zx\r\n", len);
    evbuffer_add(out, size, (size_t)n);
    evbuffer_add_buffer(out, data);
    evbuffer_add(out, "\r\n", 2);
    if (!ex->conn->busy) conn_after_io(ex->conn);
}

void http1_stream_end(struct http1_exchange *ex, bool failed)
{
    struct conn *c = ex->conn;
    if (!c) {
        exchange_free(ex);
        return;
    }
    struct evbuffer *out = stream_target(ex);
    if (out && !failed) evbuffer_add(out, "0\r\n\r\n", 5);
    /* A failed stream has no well-formed end: closing the connection after
     * what was sent is how HTTP/1.1 says the answer is incomplete. */
    if (failed) ex->close_after = true;
    ex->answered = true;
    conn_release_answered(c);
    if (!c->busy) conn_after_io(c);
}

size_t http1_stream_unsent(const struct http1_exchange *ex)
{
    const struct conn *c = ex->conn;
    if (!c) return 0;
    if (c->queue == ex) return evbuffer_get_length(c->out);
    return ex->answer ? evbuffer_get_length(ex->answer) : 0;
}

void http1_answer(struct http1_exchange *ex, const struct http1_answer *a)
{
    struct conn *c = ex->conn;
    if (!c || c->closing) {
        /* The client has gone, or an earlier answer closes the connection. */
        if (a->free_body) a->free_body((void *)a->body);
        if (c) {
            ex->answered = true;
            conn_release_answered(c);
        } else {
            exchange_free(ex);
        }
        return;
    }
    bool close = a->close || !ex->keep_alive;
    struct evbuffer *out = c->out;
    if (c->queue != ex && !(out = ex->answer = evbuffer_new())) {
        if (a->free_body) a->free_body((void *)a->body);
        close = true;
    } else {
        write_answer(out, c->h, ex, a, close, false);
    }
    ex->answered = true;
    ex->close_after = close;
    conn_release_answered(c);
    if (!c->busy) conn_after_io(c);
}

void http1_answer_error(struct http1_exchange *ex, int status, const char *request_id,
                        const char *message, bool close)
{
    size_t len = 0;
    char *body = json_error_body(message, &len);
    struct http1_answer a = {.status = status, .content_type = "application/json",
                             .request_id = request_id, .body = body, .body_len = body ? len : 0,
                             .free_body = free, .close = close};
    http1_answer(ex, &a);
}

const char *http1_request_id(const struct http1_exchange *ex, char generated[32])
{
    const char *id = http1_find_header(ex, "X-Request-ID");
    size_t n = 0;
    for (; id && id[n]; n++)
        if (n >= 128 || id[n] <= ' ' || id[n] >= 127) {
            id = NULL;
            break;
        }
    if (id && n > 0) return id;
    request_id_generate(generated);
    return generated;
}

/* The layer's own refusal of the request being read: answered in turn,
 * and nothing after it is read. */
static int refuse(struct conn *c, int status, const char *message)
{
    struct http1_exchange *ex = c->parsing;
    c->parsing = NULL;
    c->input_done = true;
    c->refused = true;
    if (!ex) return HPE_USER;
    ex->complete = true;
    char generated[32];
    http1_answer_error(ex, status, http1_request_id(ex, generated), message, true);
    return HPE_USER;
}

static struct conn *conn_of(llhttp_t *p) { return p->data; }

static bool head_grow(struct conn *c, size_t len)
{
    struct http1_exchange *ex = c->parsing;
    ex->head_size += len;
    return ex->head_size <= c->h->limits.max_header;
}

static int on_message_begin(llhttp_t *p)
{
    struct conn *c = conn_of(p);
    struct http1_exchange *ex = exchange_new(c);
    if (!ex) return refuse(c, 500, "out of memory");
    if (c->queue_tail)
        c->queue_tail->next = ex;
    else
        c->queue = ex;
    c->queue_tail = ex;
    c->pending++;
    c->begun++;
    c->parsing = ex;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = conn_of(p);
    /* A target ended by the line's end: no version (HTTP/0.9's form),
     * which llhttp would take and then read headers for. */
    if (at + len < c->feed_end && (at[len] == '\r' || at[len] == '\n'))
        return refuse(c, 400, "malformed request line: no HTTP version");
    if (!head_grow(c, len)) return refuse(c, 431, "request head larger than --max-header");
    if (!head_append(c->parsing, at, len)) return refuse(c, 500, "out of memory");
    return 0;
}

static int on_url_complete(llhttp_t *p)
{
    struct conn *c = conn_of(p);
    if (!head_append(c->parsing, "", 1)) return refuse(c, 500, "out of memory");
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = conn_of(p);
    struct http1_exchange *ex = c->parsing;
    /* A name starts: its offset, then the value's, are marked. */
    if (!(ex->field_count & 1) && !head_mark(ex)) return refuse(c, 500, "out of memory");
    if (!head_grow(c, len + 4)) return refuse(c, 431, "request head larger than --max-header");
    if (!head_append(ex, at, len)) return refuse(c, 500, "out of memory");
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    struct conn *c = conn_of(p);
    struct http1_exchange *ex = c->parsing;
    if (!head_append(ex, "", 1) || !head_mark(ex)) return refuse(c, 500, "out of memory");
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = conn_of(p);
    if (!head_grow(c, len)) return refuse(c, 431, "request head larger than --max-header");
    if (!head_append(c->parsing, at, len)) return refuse(c, 500, "out of memory");
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct conn *c = conn_of(p);
    struct http1_exchange *ex = c->parsing;
    /* llhttp leaves a value's trailing whitespace in; it is not part of
     * the value (RFC 9110 5.5). */
    size_t start = ex->fields[ex->field_count - 1];
    while (ex->head_len > start &&
           (ex->head[ex->head_len - 1] == ' ' || ex->head[ex->head_len - 1] == '\t'))
        ex->head_len--;
    if (!head_append(ex, "", 1)) return refuse(c, 500, "out of memory");
    return 0;
}

/* What llhttp lets through but serve does not take. NULL when the head is
 * sound; else the message, with *status. */
static const char *head_problem(const llhttp_t *p, const struct http1_exchange *ex, int *status)
{
    size_t hosts = 0;
    *status = 400;
    for (size_t i = 0; i < http1_header_count(ex); i++) {
        const char *name, *value;
        http1_header(ex, i, &name, &value);
        if (!*name) return "empty header name";
        /* Strict llhttp already refuses these; a value with a line end or
         * a NUL must never reach a plugin, whatever a parser update does. */
        for (const unsigned char *v = (const unsigned char *)value; *v; v++)
            if ((*v < 0x20 && *v != '\t') || *v == 0x7f) return "control character in a header value";
        if (strcasecmp(name, "Host") == 0) {
            hosts++;
        } else if (strcasecmp(name, "Transfer-Encoding") == 0) {
            if (p->http_minor == 0) return "Transfer-Encoding in an HTTP/1.0 request";
            if (strcasecmp(value, "chunked") != 0) {
                *status = 501;
                return "only Transfer-Encoding: chunked is supported";
            }
        } else if (strcasecmp(name, "Expect") == 0 && strcasecmp(value, "100-continue") != 0) {
            *status = 417;
            return "only Expect: 100-continue is supported";
        }
    }
    if (hosts > 1) return "more than one Host header";
    if (p->http_minor == 1 && hosts == 0) return "HTTP/1.1 request without a Host header";
    return NULL;
}

static int on_headers_complete(llhttp_t *p)
{
    struct conn *c = conn_of(p);
    struct http1 *h = c->h;
    struct http1_exchange *ex = c->parsing;
    if (p->http_major != 1 || p->http_minor > 1)
        return refuse(c, 505, "only HTTP/1.0 and HTTP/1.1 are supported");
    ex->method = llhttp_method_name(p->method);
    ex->http10 = p->http_minor == 0;
    ex->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
    ex->head_only = p->method == HTTP_HEAD;
    if (c->over_limit) {
        atomic_fetch_add_explicit(&h->refused, 1, memory_order_relaxed);
        char why[80];
        snprintf(why, sizeof why, "server at its connection limit (%zu)", h->limits.max_connections);
        return refuse(c, 503, why);
    }
    if (p->method == HTTP_CONNECT) return refuse(c, 501, "CONNECT is not supported");
    int status;
    const char *problem = head_problem(p, ex, &status);
    if (problem) return refuse(c, status, problem);
    bool chunked = p->flags & F_CHUNKED;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0) {
        if (p->content_length > h->limits.max_body)
            return refuse(c, 413, "request body larger than --max-body");
        if (p->content_length > body_memory_limit)
            return refuse(c, 413, TOO_LARGE_FOR_BUDGET);
        if (!body_reserve(ex, (size_t)p->content_length))
            return refuse(c, 503, "request dropped: request bodies held in memory are at "
                                  "--max-body-memory; try again");
    }
    bool body_follows = chunked || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
    const char *expect = http1_find_header(ex, "Expect");
    if (expect && body_follows) {
        /* Only a request that would be taken is told to send its body. */
        if (!h->handler->check_expect(h->ctx, ex)) {
            c->parsing = NULL;
            c->input_done = true;
            c->refused = true;
            return HPE_USER;
        }
        c->want_continue = true;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = conn_of(p);
    struct http1_exchange *ex = c->parsing;
    size_t max = c->h->limits.max_body;
    if (len > max - ex->body_len) return refuse(c, 413, "request body larger than --max-body");
    if (ex->body_len + len > body_memory_limit) return refuse(c, 413, TOO_LARGE_FOR_BUDGET);
    if (ex->body_len + len > ex->body_cap) {
        /* Chunked: grows by doubling, within the limit and the budget. */
        size_t cap = ex->body_cap ? ex->body_cap * 2 : 4096;
        if (cap < ex->body_len + len) cap = ex->body_len + len;
        if (cap > max) cap = max;
        if (cap > body_memory_limit) cap = body_memory_limit;
        if (!body_reserve(ex, cap))
            return refuse(c, 503, "request dropped: request bodies held in memory are at "
                                  "--max-body-memory; try again");
    }
    memcpy(ex->body + ex->body_len, at, len);
    ex->body_len += len;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct conn *c = conn_of(p);
    struct http1 *h = c->h;
    struct http1_exchange *ex = c->parsing;
    c->parsing = NULL;
    c->want_continue = false;
    ex->complete = true;
    if (!ex->keep_alive) c->input_done = true;
    h->handler->on_request(h->ctx, ex);
    if (c->input_done || c->closing) return HPE_PAUSED;
    if (c->pending >= PIPELINE_DEPTH || evbuffer_get_length(c->out) > OUTPUT_HIGH) {
        c->paused = true;
        return HPE_PAUSED;
    }
    return 0;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* The answer to a request llhttp refused. */
static void refuse_parse_error(struct conn *c, llhttp_errno_t err)
{
    char message[160];
    int status = 400;
    switch (err) {
    case HPE_INVALID_VERSION:
        status = 505;
        snprintf(message, sizeof message, "only HTTP/1.0 and HTTP/1.1 are supported");
        break;
    case HPE_INVALID_TRANSFER_ENCODING:
        status = 501;
        snprintf(message, sizeof message, "only Transfer-Encoding: chunked is supported");
        break;
    default:
        snprintf(message, sizeof message, "malformed request: %s",
                 llhttp_get_error_reason(&c->parser));
    }
    if (!c->parsing && on_message_begin(&c->parser) != 0) return;
    refuse(c, status, message);
}

/* Parses bytes read; what a pause leaves is kept for later. */
static void conn_feed(struct conn *c, const char *data, size_t len)
{
    c->feed_end = data + len;
    llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
    if (err == HPE_OK) {
        /* The head asked for 100 Continue and its body is not here yet;
         * it is sent only when no earlier answer is still to come. */
        if (c->want_continue && c->parsing && c->queue == c->parsing) {
            evbuffer_add(c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
            c->want_continue = false;
        }
        return;
    }
    if (err == HPE_PAUSED && !c->input_done && !c->closing) {
        const char *at = llhttp_get_error_pos(&c->parser);
        size_t used = at ? (size_t)(at - data) : len;
        size_t rest = len - used;
        if (rest) {
            char *kept = malloc(rest);
            if (!kept) {
                c->broken = true;
                return;
            }
            memcpy(kept, data + used, rest);
            free(c->leftover);
            c->leftover = kept;
            c->leftover_len = rest;
        }
        c->paused = true;
        return;
    }
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE || c->refused) {
        c->input_done = true; /* what follows is not read */
        return;
    }
    refuse_parse_error(c, err);
}

static void conn_unlink_partial(struct conn *c)
{
    struct http1_exchange *ex = c->parsing;
    if (!ex) return;
    /* Always the queue's last: nothing after it has begun. */
    struct http1_exchange **link = &c->queue;
    struct http1_exchange *prev = NULL;
    while (*link != ex) {
        prev = *link;
        link = &(*link)->next;
    }
    *link = NULL;
    c->queue_tail = prev;
    c->pending--;
    c->parsing = NULL;
    exchange_free(ex);
}

static void conn_close(struct conn *c)
{
    struct http1 *h = c->h;
    conn_unlink_partial(c);
    struct http1_exchange *abandoned = NULL;
    for (struct http1_exchange *ex = c->queue, *next; ex; ex = next) {
        next = ex->next;
        if (ex->complete && !ex->answered) {
            ex->conn = NULL; /* the front end answers it later; dropped then */
            ex->next = abandoned;
            abandoned = ex;
        } else {
            exchange_free(ex);
        }
    }
    event_del(&c->read_ev);
    event_del(&c->write_ev);
    event_del(&c->timer_ev);
    close(c->fd);
    evbuffer_free(c->out);
    free(c->leftover);
    c->prev->next = c->next;
    c->next->prev = c->prev;
    atomic_fetch_sub_explicit(h->limits.open, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&h->open_here, 1, memory_order_relaxed);
    free(c);
    /* Told last: the front end may answer (and so free) each at once. */
    for (struct http1_exchange *ex = abandoned, *next; ex; ex = next) {
        next = ex->next;
        ex->next = NULL;
        if (h->handler->on_abandon) h->handler->on_abandon(h->ctx, ex);
    }
}

static void conn_set_timer(struct conn *c, int kind, const struct timeval *tv)
{
    if (kind == c->timer) return;
    c->timer = kind;
    if (kind == TIMER_NONE)
        event_del(&c->timer_ev);
    else
        event_add(&c->timer_ev, tv);
}

/* After every event of a connection: writes what is ready, reads again
 * when it may, closes when it is done, and sets the right deadline. */
static void conn_after_io(struct conn *c)
{
    struct http1 *h = c->h;
    for (;;) {
        if (c->broken) {
            conn_close(c);
            return;
        }
        if (evbuffer_get_length(c->out) && !c->writing) {
            if (evbuffer_write(c->out, c->fd) < 0 && errno != EAGAIN && errno != EINTR) {
                conn_close(c);
                return;
            }
            if (evbuffer_get_length(c->out)) {
                event_add(&c->write_ev, NULL);
                c->writing = true;
            }
        }
        if (c->input_done && !c->parsing && !c->queue) c->closing = true;
        if (c->closing) {
            if (evbuffer_get_length(c->out)) break; /* closed once written */
            if (!c->lingering) {
                /* Reads on until the client closes (briefly), so that what
                 * it still sends does not reset the connection before it
                 * has read the last answer. */
                c->lingering = true;
                shutdown(c->fd, SHUT_WR);
                if (!c->reading) event_add(&c->read_ev, NULL);
                c->reading = true;
                c->timer = TIMER_NONE;
                event_del(&c->timer_ev);
                struct timeval linger = {2, 0};
                event_add(&c->timer_ev, &linger);
            }
            return;
        }
        if (c->paused && !c->input_done && c->pending < PIPELINE_DEPTH &&
            evbuffer_get_length(c->out) < OUTPUT_LOW) {
            c->paused = false;
            llhttp_resume(&c->parser);
            char *kept = c->leftover;
            size_t kept_len = c->leftover_len;
            c->leftover = NULL;
            c->leftover_len = 0;
            if (kept) {
                c->busy++;
                conn_feed(c, kept, kept_len);
                c->busy--;
                free(kept);
                continue;
            }
        }
        break;
    }
    bool want_read = !c->paused && !c->input_done;
    if (want_read != c->reading) {
        if (want_read)
            event_add(&c->read_ev, NULL);
        else
            event_del(&c->read_ev);
        c->reading = want_read;
    }
    if (c->parsing || c->over_limit) {
        /* Each request has its own deadline from its first byte. */
        if (c->timer_for != c->begun) c->timer = TIMER_NONE;
        c->timer_for = c->begun;
        conn_set_timer(c, TIMER_READ, h->read_timeout);
    }
    else if (c->writing)
        conn_set_timer(c, TIMER_WRITE, h->idle_timeout);
    else if (!c->queue)
        conn_set_timer(c, TIMER_IDLE, h->idle_timeout);
    else
        conn_set_timer(c, TIMER_NONE, NULL);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct conn *c = arg;
    struct http1 *h = c->h;
    ssize_t n = recv(fd, h->read_buf, READ_CHUNK, 0);
    if (c->lingering) {
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) conn_close(c);
        return;
    }
    if (n > 0) {
        c->busy++;
        conn_feed(c, h->read_buf, (size_t)n);
        c->busy--;
    } else if (n == 0) {
        /* The client is done sending: a request it left partial is
         * dropped. One still waiting for its answer means the client has
         * gone (as most clients close, not half-close): the connection
         * closes and the front end cancels what it had not answered. */
        conn_unlink_partial(c);
        c->input_done = true;
        for (struct http1_exchange *ex = c->queue; ex; ex = ex->next)
            if (ex->complete && !ex->answered) c->broken = true;
    } else if (errno != EAGAIN && errno != EINTR) {
        c->broken = true;
    }
    conn_after_io(c);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct conn *c = arg;
    if (evbuffer_write(c->out, fd) < 0 && errno != EAGAIN && errno != EINTR) {
        conn_close(c);
        return;
    }
    if (!evbuffer_get_length(c->out)) {
        event_del(&c->write_ev);
        c->writing = false;
    }
    /* A stream next in order may have room again for its writer. */
    if (c->queue && c->queue->streaming && !c->queue->answered && c->h->handler->on_drain)
        c->h->handler->on_drain(c->h->ctx, c->queue);
    c->timer = TIMER_NONE; /* progress: the write deadline starts again */
    conn_after_io(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    if (c->timer == TIMER_READ) {
        atomic_fetch_add_explicit(&c->h->read_timeouts, 1, memory_order_relaxed);
        LOG_DEBUG("closing a connection that sent no whole request in %d s",
                  c->h->limits.read_timeout_s);
    }
    conn_close(c);
}

/* ---- Accepting ---- */

#ifndef ACCEPTS_PER_WAKEUP
#define ACCEPTS_PER_WAKEUP 1
#endif

static void on_accept(evutil_socket_t fd, short what, void *arg);

static void pause_accepting(struct http1 *h, int err)
{
    event_del(&h->accept_ev);
    struct timeval pause = {0, ACCEPT_PAUSE_MS * 1000};
    event_add(&h->accept_pause_ev, &pause);
    h->accept_pauses++;
    time_t now = time(NULL);
    if (now - h->accept_logged_at >= ACCEPT_LOG_EVERY_S) {
        LOG_WARN("cannot accept connections: %s; pausing for %d ms at a time (%zu pauses so far)",
                 strerror(err), ACCEPT_PAUSE_MS, h->accept_pauses);
        h->accept_logged_at = now;
    }
}

static void on_accept_pause_over(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http1 *h = arg;
    if (h->accepting) event_add(&h->accept_ev, NULL);
}

static void conn_open(struct http1 *h, int fd, const struct sockaddr_storage *peer)
{
    struct conn *c = calloc(1, sizeof *c);
    struct evbuffer *out = c ? evbuffer_new() : NULL;
    if (!out) {
        free(c);
        close(fd);
        return;
    }
    c->h = h;
    c->fd = fd;
    c->out = out;
    c->peer = *peer;
    llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
    c->parser.data = c;
    event_assign(&c->read_ev, h->base, fd, EV_READ | EV_PERSIST, on_read, c);
    event_assign(&c->write_ev, h->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
    evtimer_assign(&c->timer_ev, h->base, on_timer, c);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->prev = h->conns.prev;
    c->next = &h->conns;
    c->prev->next = c;
    h->conns.prev = c;
    size_t open = atomic_fetch_add_explicit(h->limits.open, 1, memory_order_relaxed) + 1;
    atomic_fetch_add_explicit(&h->open_here, 1, memory_order_relaxed);
    /* Refused with an answer on its first request, or closed by the read
     * deadline if it sends none. */
    c->over_limit = h->limits.max_connections && open > h->limits.max_connections;
    event_add(&c->read_ev, NULL);
    c->reading = true;
    conn_after_io(c);
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct http1 *h = arg;
    /* The I/O threads share the listening socket, and each is woken while
     * it is readable: one connection per wake-up spreads a burst of
     * connects over them, where a loop would let the first one awake take
     * the whole burst and leave the other threads idle for its life. */
    for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        int client = accept4(fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (client >= 0) {
            conn_open(h, client, &peer);
            continue;
        }
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
            pause_accepting(h, errno);
        else if (errno == EINTR || errno == ECONNABORTED)
            continue;
        return; /* EAGAIN: none left */
    }
}

struct http1 *http1_new(struct event_base *base, int listen_fd, const struct http1_limits *limits,
                        const struct http1_handler *handler, void *ctx)
{
    struct http1 *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->base = base;
    h->listen_fd = listen_fd;
    h->limits = *limits;
    h->handler = handler;
    h->ctx = ctx;
    h->conns.prev = h->conns.next = &h->conns;
    h->read_buf = malloc(READ_CHUNK);
    /* Every connection's deadline of a kind has the same length: queues
     * instead of the timer heap, so arming one costs O(1). */
    struct timeval read_timeout = {limits->read_timeout_s, 0};
    struct timeval idle_timeout = {limits->idle_timeout_s, 0};
    h->read_timeout = event_base_init_common_timeout(base, &read_timeout);
    h->idle_timeout = event_base_init_common_timeout(base, &idle_timeout);
    event_assign(&h->accept_ev, base, listen_fd, EV_READ | EV_PERSIST, on_accept, h);
    evtimer_assign(&h->accept_pause_ev, base, on_accept_pause_over, h);
    if (!h->read_buf || !h->read_timeout || !h->idle_timeout) {
        free(h->read_buf);
        free(h);
        return NULL;
    }
    return h;
}

bool http1_start_accepting(struct http1 *h)
{
    if (h->accepting) return true;
    if (event_add(&h->accept_ev, NULL) != 0) return false;
    h->accepting = true;
    return true;
}

void http1_stop_accepting(struct http1 *h)
{
    h->accepting = false;
    event_del(&h->accept_ev);
    event_del(&h->accept_pause_ev);
}

void http1_free(struct http1 *h)
{
    if (!h) return;
    http1_stop_accepting(h);
    while (h->conns.next != &h->conns) conn_close(h->conns.next);
    while (h->spare) {
        struct http1_exchange *ex = h->spare;
        h->spare = ex->next;
        free(ex->head);
        free(ex->fields);
        free(ex);
    }
    close(h->listen_fd);
    free(h->read_buf);
    free(h);
}

size_t http1_read_timeouts(const struct http1 *h)
{
    return atomic_load_explicit(&h->read_timeouts, memory_order_relaxed);
}

size_t http1_open_connections(const struct http1 *h)
{
    return atomic_load_explicit(&h->open_here, memory_order_relaxed);
}

void http1_set_owner(struct http1_exchange *ex, void *owner) { ex->owner = owner; }

void *http1_owner(const struct http1_exchange *ex) { return ex->owner; }

size_t http1_refused(const struct http1 *h)
{
    return atomic_load_explicit(&h->refused, memory_order_relaxed);
}

/* ---- The request, for the front end ---- */

const char *http1_method(const struct http1_exchange *ex) { return ex->method; }

const char *http1_path(struct http1_exchange *ex, const char **query)
{
    char *target = ex->head;
    if (!ex->split) {
        ex->split = true;
        ex->path_off = 0;
        ex->query_off = 0;
        /* Absolute form: the path is what follows the authority, and
         * "/" when nothing does. */
        if (strncasecmp(target, "http://", 7) == 0 || strncasecmp(target, "https://", 8) == 0) {
            char *after = strpbrk(strstr(target, "://") + 3, "/?");
            if (after && *after == '/') {
                ex->path_off = (uint32_t)(after - target);
            } else {
                ex->root_path = true;
                if (after) ex->query_off = (uint32_t)(after + 1 - target);
            }
        }
        char *q = ex->root_path ? NULL : strchr(target + ex->path_off, '?');
        if (q) {
            *q = '\0';
            ex->query_off = (uint32_t)(q + 1 - target);
        }
        char *fragment = strchr(target + ex->path_off, '#');
        if (fragment) *fragment = '\0';
    }
    if (query) *query = ex->query_off ? target + ex->query_off : NULL;
    return ex->root_path ? "/" : target + ex->path_off;
}

size_t http1_header_count(const struct http1_exchange *ex) { return ex->field_count / 2; }

void http1_header(const struct http1_exchange *ex, size_t i, const char **name, const char **value)
{
    *name = ex->head + ex->fields[2 * i];
    *value = ex->head + ex->fields[2 * i + 1];
}

const char *http1_find_header(const struct http1_exchange *ex, const char *name)
{
    for (size_t i = 0; i < ex->field_count / 2; i++)
        if (strcasecmp(ex->head + ex->fields[2 * i], name) == 0)
            return ex->head + ex->fields[2 * i + 1];
    return NULL;
}

const char *http1_peer(struct http1_exchange *ex)
{
    struct conn *c = ex->conn;
    if (!c) return "-";
    if (!c->peer_text[0]) {
        const void *addr = c->peer.ss_family == AF_INET6
                               ? (const void *)&((const struct sockaddr_in6 *)&c->peer)->sin6_addr
                               : (const void *)&((const struct sockaddr_in *)&c->peer)->sin_addr;
        if (!inet_ntop(c->peer.ss_family, addr, c->peer_text, sizeof c->peer_text))
            snprintf(c->peer_text, sizeof c->peer_text, "-");
    }
    return c->peer_text;
}

void *http1_take_body(struct http1_exchange *ex, size_t *len)
{
    void *body = ex->body;
    *len = ex->body_len;
    ex->body = NULL;
    ex->body_len = ex->body_cap = 0;
    return body;
}
