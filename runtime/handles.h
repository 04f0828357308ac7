/* handles.h - calls from plugins (and from `serve call`) to endpoints by
 * name, through the same router, queues and timeouts as HTTP requests.
 *
 * One router per process: the server publishes each new routes snapshot
 * here as well as to its HTTP threads. */
#ifndef SERVE_RUNTIME_HANDLES_H
#define SERVE_RUNTIME_HANDLES_H

#include "routes.h"

/* Makes `routes` the snapshot handle calls resolve names in (takes a
 * reference; NULL drops the current one). Any thread. */
void handles_publish_routes(struct routes *routes);

/* Stops the timer thread of call timeouts; call once the backends are
 * stopped. */
void handles_shutdown(void);

/* Sends copies of `primary` to the endpoint's shadow backends: one uniform
 * draw per request, and each shadow whose fraction is above it gets a copy,
 * so a smaller fraction sees a subset of a larger one's requests. Answers
 * are discarded; the primary never waits for them. */
void handles_shadow(const struct route_entry *route, const serve_request *primary);

/* A call to `endpoint` without a handle (the control plane's `serve call`). */
serve_call *handles_call_new(const char *endpoint, const serve_request *parent);

#endif
