/* oip_front.h - the Open Inference Protocol's HTTP paths (KServe v2,
 * Triton), a front end beside plain HTTP routes.
 *
 *   GET  /v2                                   server metadata
 *   GET  /v2/health/live, /v2/health/ready     200, empty body
 *   GET  /v2/models/NAME[/versions/V]          model metadata (the tensors
 *                                              the backend's plugin declared)
 *   GET  /v2/models/NAME[/versions/V]/ready    200, empty body
 *   POST /v2/models/NAME[/versions/V]/infer    routed to endpoint NAME like
 *                                              any request to its route
 *
 * NAME is an endpoint with a route; versions are accepted and echoed, not
 * kept (an endpoint is one model; its traffic split chooses the backend).
 * The infer body is decoded where the plugin runs (tensor.h), not here:
 * the I/O thread only routes. Other paths under /v2/ are ordinary paths. */
#ifndef SERVE_RUNTIME_OIP_FRONT_H
#define SERVE_RUNTIME_OIP_FRONT_H

#include <stdbool.h>

#include "http1_conn.h"
#include "routes.h"

enum oip_outcome {
    OIP_NOT_MINE, /* not an OIP path: route it as usual */
    OIP_ANSWERED, /* answered here (metadata, health, or an error) */
    OIP_INFER,    /* an inference: *route is its endpoint */
};

/* Looks at a decoded request path on an I/O thread; answers what it can
 * with http1_answer (close: the connection closes after). */
enum oip_outcome oip_front_route(const struct routes *routes, struct http1_exchange *ex,
                                 const char *path, const char *method, const char *request_id,
                                 bool close, const struct route_entry **route);

#endif
