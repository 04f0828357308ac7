/* access_log.h - one line per answered request, HTTP or handle call, in the
 * combined log format or as JSON, when `serve start --access-log` asks.
 *
 * Lines are built on the answering thread and appended to one buffer under
 * a mutex held for a memcpy; the buffer is written out when it passes 32 KiB
 * and at least every 200 ms (access_log_flush, called by the main thread). */
#ifndef SERVE_RUNTIME_ACCESS_LOG_H
#define SERVE_RUNTIME_ACCESS_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "request.h"

enum access_log_format { ACCESS_LOG_COMBINED, ACCESS_LOG_JSON };

/* path "-" is standard output. */
bool access_log_open(const char *path, enum access_log_format format, char *err, size_t errlen);
void access_log_close(void);
void access_log_flush(void);

/* True when a log is open; callers skip building anything otherwise. */
extern bool access_log_on;

/* A request that reached a backend (or was refused by one). kind is "http"
 * or "handle"; client is the peer address or NULL. */
void access_log_request(const serve_request *req, const char *kind, const char *client,
                        const char *endpoint, int status, size_t bytes);

/* An HTTP request answered by the server itself (404, 405, ...). */
void access_log_plain(const char *client, const char *method, const char *path, const char *id,
                      int status, size_t bytes);

#endif
