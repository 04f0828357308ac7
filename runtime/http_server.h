/* http_server.h - the data plane: N I/O threads, each with its own libevent
 * base and HTTP/1.1 connection layer (http1_conn.h), sharing one listening
 * socket.
 *
 * An I/O thread parses a request, routes it with its own routes snapshot,
 * queues it on the backend and goes on; the answer comes back through the
 * thread's completion queue (mutex + event_active), and the thread writes
 * it. The data plane can only route to what exists: it cannot load, change
 * or delete anything. */
#ifndef SERVE_RUNTIME_HTTP_SERVER_H
#define SERVE_RUNTIME_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "routes.h"

struct http_options {
    const char *host;
    int port;            /* 0 picks a free port */
    int threads;
    size_t max_body;
    size_t max_header;
    int idle_timeout_s;
    int read_timeout_s;
    size_t max_connections; /* 0: no limit */
    size_t max_body_memory; /* every request body held at once; 0: no limit */
    /* A socket already listening (a supervisor's, see supervisor.h) to
     * serve instead of binding host:port; the server takes a copy of it
     * (dup) and never closes the caller's. host and port then only name it. */
    bool use_listen_fd;
    int listen_fd;
};

struct http_server;

/* Binds a listening socket for host:port (port 0 picks one), close-on-exec
 * and non-blocking; *bound_port says which port. -1 with err set
 * ("cannot listen on HOST:PORT: ...") on failure. */
int http_listen(const char *host, int port, int *bound_port, char *err, size_t errlen);

/* Binds (or takes options->listen_fd) and starts the I/O threads with an
 * empty routing table. They take no connection before http_server_accept:
 * until then connections wait in the listen queue (a restarted server
 * answers no 404 for a route it has not restored yet). */
struct http_server *http_server_start(const struct http_options *options,
                                      char *err, size_t errlen);
int http_server_port(const struct http_server *s);

/* The I/O threads start taking connections. Any thread. */
void http_server_accept(struct http_server *s);

/* Hands a new snapshot to every I/O thread (each takes its own reference;
 * the caller keeps its own). Any thread. */
void http_server_publish_routes(struct http_server *s, struct routes *routes);

/* Stops accepting connections; requests on open connections get 503 and
 * the connection is closed; /-/healthz answers 503. */
void http_server_drain(struct http_server *s);

/* Requests received and not yet answered, over all threads. */
size_t http_server_outstanding(struct http_server *s);

/* Client connections open now (a closed one is uncounted within a second). */
size_t http_server_open_connections(struct http_server *s);
/* How long a drain should go on refusing (503, unprocessed) once nothing
 * is outstanding, so that a balancer polling /-/healthz sees it before the
 * node goes: two of its intervals and a margin (at most 10 s), or 0 when
 * /-/healthz is not being polled. */
uint64_t http_server_drain_linger_ns(struct http_server *s);

/* Connections closed by the read timeout, and refused over the
 * connection limit, since start. */
size_t http_server_read_timeouts(struct http_server *s);
size_t http_server_refused(struct http_server *s);

/* Stops the threads and frees everything. */
void http_server_stop(struct http_server *s);

#endif
