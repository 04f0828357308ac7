/* replica_context.h - what the SDK's serve_replica is inside the runtime. */
#ifndef SERVE_RUNTIME_REPLICA_CONTEXT_H
#define SERVE_RUNTIME_REPLICA_CONTEXT_H

#include "serve/plugin.h"

struct serve_replica {
    const char *backend_name; /* owned by the backend */
    int index;
    char failure[1024];       /* set by serve_replica_fail during init */
};

#endif
