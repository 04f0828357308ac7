/* server_internal.h - the server object shared by server.c (lifecycle) and
 * control.c / commands.c (the control plane). Only the control thread
 * changes it after start. */
#ifndef SERVE_RUNTIME_SERVER_INTERNAL_H
#define SERVE_RUNTIME_SERVER_INTERNAL_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "deploy_watch.h"
#include "backend.h"
#include "deployment.h"
#include "http_server.h"
#include "routes.h"
#include "server.h"

struct server {
    struct server_options options;
    char state_path[4096];
    char socket_path[4096];
    char url[256];
    time_t started_at;

    struct http_server *http;
    struct deployment declared;  /* what was acknowledged and persisted */
    struct backend **live;       /* live[i] runs declared.backends[i] */
    struct routes *routes;       /* the snapshot last published */

    struct control *control;     /* control.c's */
    struct deploy_watch_mark watch_mark; /* --watch: the deploy file as --deploy read it */
    _Atomic double stop_timeout_s; /* set by the stop command */
};

/* control.c: binds the control socket (refusing to remove anything there
 * but a stale socket of ours) and starts the control thread. */
bool control_start(struct server *s, char *err, size_t errlen);
/* Stops taking connections and commands (the socket file goes), and returns
 * once no command runs. Replies being written and the answers of calls under
 * way still go out until control_stop. */
void control_close(struct server *s);
/* Ends the control thread once every reply is out (each within its
 * deadline) and frees it all; calls not answered by then get no reply.
 * Call once the backends are stopped. A no-op when control_start was not
 * called. */
void control_stop(struct server *s);

/* commands.c: run a decoded control request, writing the result (any
 * msgpack value) with pk. Returns false with err set on failure. */
bool command_run(struct server *s, const msgpack_object *request,
                 msgpack_packer *pk, char *err, size_t errlen);

/* commands.c: makes the server run `desired` (taken over in every case). */
bool server_apply(struct server *s, struct deployment *desired, char *err, size_t errlen);

/* commands.c: autoscaling's tick over the live backends (backend.h);
 * persists the targets that changed. Control thread. */
void server_autoscale_tick(struct server *s);

/* commands.c: builds and publishes the routes for the declared endpoints. */
bool server_publish_routes(struct server *s);
/* commands.c: starts a live backend for a spec already in `declared`. */
bool server_add_live_backend(struct server *s, const struct backend_spec *spec,
                             char *err, size_t errlen);

#endif
