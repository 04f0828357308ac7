/* handles.h - calls from plugins (and from `serve call`) to endpoints by
 * name: a front end of dispatch (dispatch.h), which routes them by name
 * through the same queues, timeouts and errors as HTTP requests. */
#ifndef SERVE_RUNTIME_HANDLES_H
#define SERVE_RUNTIME_HANDLES_H

#include "request.h"

/* A call to `endpoint` without a handle (the control plane's `serve call`). */
serve_call *handles_call_new(const char *endpoint, const serve_request *parent);

#endif
