/* server_internal.h - the server object shared by server.c (lifecycle) and
 * control.c / commands.c (the control plane). Only the control thread
 * changes it after start. */
#ifndef SERVE_RUNTIME_SERVER_INTERNAL_H
#define SERVE_RUNTIME_SERVER_INTERNAL_H

#include <msgpack.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "backend.h"
#include "deployment.h"
#include "http_server.h"
#include "routes.h"
#include "server.h"

struct server {
    struct server_options options;
    char state_path[4096];
    char socket_path[4096];
    char lock_path[4096];
    char url[256];
    time_t started_at;

    struct http_server *http;
    struct deployment declared;  /* what was acknowledged and persisted */
    struct backend **live;       /* live[i] runs declared.backends[i] */
    struct routes *routes;       /* the snapshot last published */

    int control_fd;
    int control_wake[2];
    pthread_t control_thread;
    bool control_started;
    _Atomic double stop_timeout_s; /* set by the stop command */
};

/* control.c */
bool control_start(struct server *s, char *err, size_t errlen);
void control_stop(struct server *s);

/* commands.c: run a decoded control request, writing the result (any
 * msgpack value) with pk. Returns false with err set on failure. */
bool command_run(struct server *s, const msgpack_object *request,
                 msgpack_packer *pk, char *err, size_t errlen);

/* commands.c: makes the server run `desired` (taken over in every case). */
bool server_apply(struct server *s, struct deployment *desired, char *err, size_t errlen);

/* commands.c: builds and publishes the routes for the declared endpoints. */
bool server_publish_routes(struct server *s);
/* commands.c: starts a live backend for a spec already in `declared`. */
bool server_add_live_backend(struct server *s, const struct backend_spec *spec,
                             char *err, size_t errlen);

#endif
