/* handles.h - calls from plugins (and from `serve call`) to endpoints by
 * name: a front end of dispatch (dispatch.h), which routes them by name
 * through the same queues, timeouts and errors as HTTP requests. */
#ifndef SERVE_RUNTIME_HANDLES_H
#define SERVE_RUNTIME_HANDLES_H

#include "request.h"

/* What a call's callback reads (serve_result_* in the SDK). */
struct serve_result {
    int status;
    const char *content_type;
    const void *body;
    size_t len;
    const struct response_header *headers;
    size_t header_count;
};

/* A call to `endpoint` without a handle (the control plane's `serve call`). */
serve_call *handles_call_new(const char *endpoint, const serve_request *parent);

/* In a process replica: calls go to its server, not to dispatch. From
 * then on serve_call_send hands each call (owning the caller's reference
 * and the callback) to `forward`, which returns serve_call_send's code and
 * later completes the call with one of the two below. */
void handles_set_forwarder(int (*forward)(serve_request *call));
void handles_complete_forwarded(serve_request *call, const serve_result *result);
void handles_fail_forwarded(serve_request *call, int status, const char *message);

/* Cancels the calls in flight for `parent` (its client went away, it
 * timed out, or its plugin asked), and theirs, transitively: each call's
 * target drops it (queued) or is told (running), and its callback gets
 * 499 at once. Any thread. */
void handles_cancel_calls(serve_request *parent);

/* request_release's last step for a call or a parent: unlinks it. */
void handles_unlink(serve_request *req);

/* Server side of a forwarded call: links `call` (not sent yet) under
 * `parent`, as serve_call_new does in the server. */
void handles_set_parent(serve_request *call, serve_request *parent);

#endif
