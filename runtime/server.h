/* server.h - one serve server: its state dir, data plane, control plane
 * and backends, from start to graceful stop. */
#ifndef SERVE_RUNTIME_SERVER_H
#define SERVE_RUNTIME_SERVER_H

#include <stdbool.h>
#include <stddef.h>

struct server_options {
    const char *state_dir;
    const char *http_host;
    int http_port;
    int http_threads;   /* 0: one per core */
    size_t max_body;
    size_t max_header;
    size_t max_body_memory;  /* request bodies held at once; 0: sized for the machine */
    size_t stream_buffer;    /* per stream (stream.h); 0: the default */
    int idle_timeout_s;
    int read_timeout_s;      /* a request's first byte to its last */
    size_t max_connections;  /* 0: the open-files limit less a reserve */
    const char *deploy_file; /* applied after the state dir's state; NULL: none */
    const char *watch_file;  /* re-applied whenever it changes (deploy_watch.h); NULL: none */
    const char *access_log;  /* path or "-"; NULL: off */
    int access_log_format;   /* enum access_log_format */
    bool no_metrics;
    /* Called once the server answers requests (url "http://HOST:PORT") or
     * once it gave up starting (url NULL, message says why). */
    void (*on_started)(const char *url, const char *message, void *arg);
    void *on_started_arg;
    /* Called (with on_started_arg) once a stop begins: from then on, the
     * process exits on purpose. NULL: not called. */
    void (*on_stopping)(void *arg);

    /* Set by a supervisor (supervisor.h) for the server process it starts;
     * server_options_default leaves them "none". */
    int listen_fd;         /* the HTTP listening socket to serve; -1: bind */
    int lock_fd;           /* the state dir's lock, already held; -1: take it */
    long supervisor_pid;   /* the pid in serve.pid; 0: this process */
    unsigned restarts;     /* server processes started before this one */
};

void server_options_default(struct server_options *o);

/* Runs until SIGTERM, SIGINT or the control command "stop"; returns the
 * process exit status. */
int server_run(const struct server_options *o);

#endif
