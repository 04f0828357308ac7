/* replica_context.h - what the SDK's serve_replica is inside the runtime. */
#ifndef SERVE_RUNTIME_REPLICA_CONTEXT_H
#define SERVE_RUNTIME_REPLICA_CONTEXT_H

#include <stdatomic.h>

#include "serve/plugin.h"
#include "tensor.h"

struct serve_replica {
    const char *backend_name; /* owned by the backend */
    struct backend_metrics *metrics; /* the backend's, never NULL */
    int index;
    char failure[1024];       /* set by serve_replica_fail during init */
    /* The worker thread's own: handle_batch runs, and it asked for another
     * step (serve_replica_continue). */
    bool in_batch;
    bool again;
    /* The tensors it declared (serve_replica_declare_tensor), during init
     * only (in_init). */
    bool in_init;
    struct tensor_decls decls;
    /* Handles the plugin asked for; pushed lock-free from any thread,
     * freed after destroy. */
    _Atomic(struct serve_handle *) handles;
};

/* Frees the replica's handles (handles.c). */
void replica_free_handles(serve_replica *replica);

#endif
