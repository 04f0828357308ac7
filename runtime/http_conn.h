/* http_conn.h - what one I/O thread knows of its client connections: how
 * many are open (for the connection limit and the gauge), and how long each
 * has been reading its current request (the read deadline that closes
 * slowloris clients).
 *
 * evhttp in libevent 2.1 has no accept or close hook for server
 * connections. The table creates each connection's bufferevent itself
 * (evhttp_set_bevcb), keeps a reference to it, and notices a connection is
 * gone when evhttp has freed it (its callbacks are cleared) on a sweep once
 * a second; the fd is still closed by evhttp at once. Every function runs
 * on the table's own I/O thread, except the counters' readers. */
#ifndef SERVE_RUNTIME_HTTP_CONN_H
#define SERVE_RUNTIME_HTTP_CONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct bufferevent;
struct event_base;
struct evhttp_request;

struct conn_limits {
    atomic_size_t *open;    /* shared by every thread's table */
    size_t max_connections; /* over it, a connection's requests get 503 */
    int read_timeout_s;     /* from a request's first byte to its last */
};

struct conn_table;

struct conn_table *conn_table_new(struct event_base *base, const struct conn_limits *limits);

/* For evhttp_set_bevcb, with the table as arg: a new connection. */
struct bufferevent *conn_table_accept(struct event_base *base, void *table);

/* The request has been read whole: its connection's read deadline stops
 * until the next request's first byte. False when the connection was
 * accepted over the limit: the caller answers 503 and closes it. */
bool conn_request_read(struct conn_table *table, struct evhttp_request *ev);

/* Connections closed for taking longer than the read timeout, and those
 * refused over the connection limit, since start. Any thread. */
size_t conn_table_read_timeouts(const struct conn_table *table);
size_t conn_table_refused(const struct conn_table *table);

/* After evhttp_free (which closes every connection), before the base. */
void conn_table_free(struct conn_table *table);

#endif
