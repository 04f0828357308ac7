/*
 * serve/plugin.h - the serve plugin SDK, ABI version 1.
 *
 * This header is the whole contract between a model backend (a shared object
 * loaded with dlopen) and the serve runtime. If something is not declared
 * here, it is not API. A plugin includes only this file and links nothing:
 * every serve_* function below is provided by the serve process that loads
 * the plugin.
 *
 * The life of a plugin
 * --------------------
 *  1. The runtime dlopens the .so and calls serve_plugin_entry(), which
 *     returns a pointer to a constant serve_plugin descriptor. The runtime
 *     reads descriptor->abi_version first and refuses the plugin, without
 *     calling anything else, when it differs from SERVE_ABI_VERSION.
 *  2. For each replica of a backend, init() is called once (again after a
 *     process replica's restart), on a thread of the control plane (in
 *     process mode: the replica process's main thread), with that
 *     backend's user configuration. It returns
 *     the replica's private state through *state. Replicas never share state.
 *  3. handle_batch() is called with 1..max_batch_size requests (0 only
 *     for a replica that asked for continuous batching), always on
 *     that replica's own worker thread, never concurrently for one replica.
 *     Each request must be answered exactly once with one of the serve_respond
 *     functions: during handle_batch, or later from any thread after
 *     serve_request_defer() was called on it during handle_batch.
 *  4. destroy() is called once per replica when its backend is deleted or the
 *     server stops, after the last handle_batch of that replica returned.
 *
 * Isolation: where a plugin runs
 * ------------------------------
 * A backend's replicas run in one of two modes (`--isolation`), and the same
 * .so works unchanged in both; everything in this header behaves the same.
 *
 *  - process (the default): each replica is a process of its own, started
 *    from the serve binary, which loads the plugin and calls init,
 *    handle_batch, reconfigure and destroy there. Requests and answers
 *    cross into it through shared memory. Handle calls are routed by the
 *    server (splits, batching and backpressure apply as for any request);
 *    serve_log lines go to the server's log. "Any thread" below means any
 *    thread of that process. A replica that crashes, aborts, exits, hangs
 *    past --hang-timeout-ms or grows past --max-memory costs only the
 *    requests it held (502, or 504 for a hang); the server starts it again
 *    (init runs again, with the same config) after a backoff, and nothing
 *    else notices. State kept in global variables of the plugin is per
 *    replica in this mode: do not rely on it being shared.
 *  - thread: replicas are threads of the server process, for plugins you
 *    trust. Globals are shared by all replicas of all backends that load
 *    the .so. A crash takes the server process down; the supervisor above
 *    it starts it again with its backends, but every in-flight request of
 *    every backend fails.
 *
 * What a plugin must never do
 * ---------------------------
 * A plugin must not call exit(), install handlers for fatal signals, or
 * close file descriptors it did not open (in process mode: the replica's
 * channel; in thread mode: the server's sockets). In thread mode it must not
 * crash at all. It must not block inside a serve_* function's caller for
 * longer than its requests can wait: a replica's worker thread is busy for
 * exactly as long as handle_batch runs.
 *
 * Minimal plugin
 * --------------
 *     #include <serve/plugin.h>
 *
 *     static int echo_batch(void *state, serve_request *const *reqs, size_t n)
 *     {
 *         (void)state;
 *         for (size_t i = 0; i < n; i++) {
 *             size_t len;
 *             const void *body = serve_request_body(reqs[i], &len);
 *             serve_respond(reqs[i], 200, "text/plain", body, len);
 *         }
 *         return 0;
 *     }
 *
 *     static const serve_plugin echo = {
 *         .abi_version = SERVE_ABI_VERSION,
 *         .name = "echo",
 *         .handle_batch = echo_batch,
 *     };
 *
 *     SERVE_PLUGIN_DEFINE(echo)
 */
#ifndef SERVE_PLUGIN_H
#define SERVE_PLUGIN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this header describes. Bumped only when an existing
 * declaration changes meaning; new functions and new trailing descriptor
 * fields do not change it. */
#define SERVE_ABI_VERSION 1u

/* Marks a symbol visible outside its shared object. serve builds with hidden
 * visibility by default; the runtime marks every function below with it, and
 * a plugin marks its entry point with it (SERVE_PLUGIN_DEFINE does so). */
#if defined(__GNUC__) || defined(__clang__)
#define SERVE_EXPORT __attribute__((visibility("default")))
#define SERVE_PRINTF(fmt_index, first_arg) \
    __attribute__((format(printf, fmt_index, first_arg)))
#else
#define SERVE_EXPORT
#define SERVE_PRINTF(fmt_index, first_arg)
#endif

/* ------------------------------------------------------------------------
 * Error codes
 * ------------------------------------------------------------------------ */

/* Every serve_* function that can fail returns 0 or one of these negative
 * codes. */
enum serve_status_code {
    SERVE_OK = 0,
    SERVE_EINVAL = -1,     /* an argument is NULL or out of range */
    SERVE_EALREADY = -2,   /* the request was already answered */
    SERVE_ENOMEM = -3,     /* out of memory */
    SERVE_ESTATE = -4,     /* the call is not allowed in this state, e.g.
                              serve_request_defer outside handle_batch */
    SERVE_ETIMEDOUT = -5,  /* the request timed out, or its client went away;
                              the answer was dropped */
    SERVE_EAGAIN = -6,     /* a stream's buffer is full (its client reads
                              slower than the plugin writes): nothing was
                              written; try again once it is writable */
    SERVE_EPROTO = -7,     /* the request's body is not a tensor body the
                              runtime can decode (see "Tensors") */
};

/* Returns a static, human-readable description of an error code. Never
 * returns NULL; unknown codes give "unknown error". Any thread. */
SERVE_EXPORT const char *serve_strerror(int code);

/* ------------------------------------------------------------------------
 * Opaque types
 * ------------------------------------------------------------------------ */

/* One client request. Owned by the runtime. Valid from the start of the
 * handle_batch call that delivers it until it is answered; after the answer
 * the pointer must not be used again (for a request answered during
 * handle_batch, until handle_batch returns). */
typedef struct serve_request serve_request;

/* The context of one replica: which backend, which replica index. Owned by
 * the runtime and valid from init until destroy returns. */
typedef struct serve_replica serve_replica;

/* A backend's user configuration: string keys to string values, as given
 * with `--config KEY=VALUE`. Owned by the runtime; valid only during the
 * init or reconfigure call it is passed to. Copy what you keep. */
typedef struct serve_config serve_config;

/* ------------------------------------------------------------------------
 * The plugin descriptor
 * ------------------------------------------------------------------------ */

typedef struct serve_plugin {
    /* Must be SERVE_ABI_VERSION. Read before anything else. */
    uint32_t abi_version;

    /* Short name for logs and `serve status`. Required. */
    const char *name;

    /* Optional. Called once per replica, on a control-plane thread. Store
     * the replica's private state in *state (NULL is allowed). Return 0 on
     * success. On failure return non-zero after serve_replica_fail() has
     * recorded why; the backend is not created and the message reaches the
     * user who asked for it. */
    int (*init)(serve_replica *replica, const serve_config *config,
                void **state);

    /* Required. Called on the replica's worker thread with 1 <= n <=
     * max_batch_size requests in arrival order (n may be 0 only for a
     * replica that asked for it with serve_replica_continue). The array itself is only
     * valid during the call. Every request must be answered (now, or later
     * after serve_request_defer). A non-zero return value answers every
     * request that is still unanswered and not deferred with 500. A request
     * that is neither answered nor deferred when this returns is a plugin
     * bug: the runtime answers it with 500 and logs the backend's name. */
    int (*handle_batch)(void *state, serve_request *const *requests, size_t n);

    /* Optional. Called on a control-plane thread with a new user config
     * while no handle_batch of this replica is running. Return 0 to accept
     * it. Without this callback a config change replaces the replica. */
    int (*reconfigure)(void *state, const serve_config *config);

    /* Optional. Called once per replica after its last handle_batch.
     * Requests still deferred at that moment are answered 503 by the
     * runtime; the plugin must not answer them afterwards. */
    void (*destroy)(void *state);

    /* Optional (added after the first release; read only from plugins
     * whose descriptor has it). Called once for a request of this replica
     * that is running or deferred when its client goes away, it times out,
     * or the request whose handle call it is was cancelled, so that work
     * on it stops early (a generation loop, handle calls in flight). It
     * runs on a runtime thread (in thread mode: possibly the server's I/O
     * thread; in process mode: the replica process's results thread), so
     * it must only note the fact or wake the plugin's own thread: never
     * block, never answer from it. The request
     * is valid during the call even if another thread has just answered
     * it; serve_request_cancelled(req) is already 1. */
    void (*cancel)(void *state, serve_request *req);

    /* New fields are only ever added here, at the end. The descriptor
     * states its size (SERVE_PLUGIN_DEFINE exports it as
     * serve_plugin_descriptor_size): the runtime reads no field past what
     * the plugin's own header defined, and sees the fields added since as
     * NULL. A plugin whose entry point was written without the macro has
     * the descriptor of ABI version 1 as first released (up to destroy). */
} serve_plugin;

/* The entry point the runtime looks up in a plugin (SERVE_PLUGIN_DEFINE
 * also exports serve_plugin_descriptor_size, its descriptor's size). */
#define SERVE_PLUGIN_ENTRY_SYMBOL "serve_plugin_entry"
typedef const serve_plugin *(*serve_plugin_entry_fn)(void);

/* Defines the plugin's exported entry point returning &descriptor. Use once
 * per plugin, at file scope. */
#define SERVE_PLUGIN_DEFINE(descriptor)                                \
    SERVE_EXPORT extern const uint32_t serve_plugin_descriptor_size;   \
    SERVE_EXPORT const uint32_t serve_plugin_descriptor_size =         \
        (uint32_t)sizeof(descriptor);                                  \
    SERVE_EXPORT const serve_plugin *serve_plugin_entry(void);         \
    SERVE_EXPORT const serve_plugin *serve_plugin_entry(void)          \
    {                                                                  \
        return &(descriptor);                                          \
    }

/* The symbol holding the descriptor's size, where the plugin has it. */
#define SERVE_PLUGIN_SIZE_SYMBOL "serve_plugin_descriptor_size"

/* ------------------------------------------------------------------------
 * Reading a request
 *
 * All of these may be called from any thread while the request is valid.
 * Returned strings are NUL-terminated, owned by the request, and valid as
 * long as the request is. Passing NULL as the request returns NULL (or 0).
 * ------------------------------------------------------------------------ */

/* The request body and its length in *len (len may be NULL). An empty body
 * gives a non-NULL pointer and length 0. The body is not NUL-terminated. */
SERVE_EXPORT const void *serve_request_body(const serve_request *req,
                                            size_t *len);

/* "GET", "POST", ... */
SERVE_EXPORT const char *serve_request_method(const serve_request *req);

/* The decoded path, without the query string, e.g. "/increment". For a
 * request arriving through a handle, the endpoint's route or "". */
SERVE_EXPORT const char *serve_request_path(const serve_request *req);

/* The decoded value of query parameter `key`, or NULL if absent. For a
 * parameter given several times, the first one. */
SERVE_EXPORT const char *serve_request_query(const serve_request *req,
                                             const char *key);

/* The value of header `name` (case-insensitive), or NULL if absent. */
SERVE_EXPORT const char *serve_request_header(const serve_request *req,
                                              const char *name);

/* The request id: the client's X-Request-ID, or one the server made. */
SERVE_EXPORT const char *serve_request_id(const serve_request *req);

/* Stages of a request, for serve_request_time_ns. */
enum serve_request_stage {
    SERVE_STAGE_RECEIVED = 0,   /* the server had the whole request */
    SERVE_STAGE_QUEUED = 1,     /* it entered the backend's queue */
    SERVE_STAGE_DISPATCHED = 2, /* its batch was handed to handle_batch */
};

/* When the request reached `stage`, in nanoseconds of CLOCK_MONOTONIC (the
 * same clock clock_gettime(CLOCK_MONOTONIC) reads), or 0 if it has not. The
 * access log shows the same stages, plus answered and written. */
SERVE_EXPORT uint64_t serve_request_time_ns(const serve_request *req, int stage);

/* ------------------------------------------------------------------------
 * Answering a request
 *
 * A request is answered exactly once. Any of these may be called from any
 * thread: during handle_batch, or afterwards for a deferred request. A second
 * answer returns SERVE_EALREADY (when detectable: during handle_batch) and is
 * logged as a plugin bug; the first answer stands. An answer that arrives
 * after the request timed out returns SERVE_ETIMEDOUT and is dropped.
 * ------------------------------------------------------------------------ */

/* Adds a response header before the answer. `name` and `value` are copied.
 * Headers named Content-Length, Content-Type, Transfer-Encoding,
 * Connection or X-Request-ID are set by the runtime and refused here
 * (SERVE_EINVAL), as is any CR or LF in either string. Call it from the
 * thread that will answer. */
SERVE_EXPORT int serve_response_add_header(serve_request *req,
                                           const char *name,
                                           const char *value);

/* Answers with `status` (100..599), a content type (NULL means
 * "application/octet-stream") and a body that is copied (body may be NULL
 * when len is 0). */
SERVE_EXPORT int serve_respond(serve_request *req, int status,
                               const char *content_type, const void *body,
                               size_t len);

/* Like serve_respond, but hands `body` over without a copy: the runtime
 * calls free_body(body) once it has been sent or dropped, on any thread.
 * free_body may be NULL for static memory. On failure (SERVE_EALREADY,
 * SERVE_EINVAL) the runtime still owns and frees the body. */
SERVE_EXPORT int serve_respond_take(serve_request *req, int status,
                                    const char *content_type, void *body,
                                    size_t len, void (*free_body)(void *));

/* Answers with `status` and the JSON body {"error": "<message>"}, the same
 * shape as the server's own errors. message may be NULL. */
SERVE_EXPORT int serve_respond_error(serve_request *req, int status,
                                     const char *message);

/* 1 when nobody waits for the answer of `req` any more: its client went
 * away (closed the connection) or it timed out; 0 otherwise. An answer
 * given to such a request is dropped, so a plugin that works long on one
 * (a generation loop, a deferred request) checks this between steps and
 * stops early. Any thread, while the request is valid; cheap (an atomic
 * load), in both isolation modes. */
SERVE_EXPORT int serve_request_cancelled(const serve_request *req);

/* ------------------------------------------------------------------------
 * Tensors: typed inputs and outputs, whatever the wire format
 *
 * A request's body may carry tensors in one of these forms; the runtime
 * tells them apart, decodes them once (on the replica's worker thread, in
 * the process that runs the plugin, never on an I/O thread) and encodes
 * the answer in the same form:
 *   - the Open Inference Protocol (KServe v2, Triton) JSON document:
 *     POST /v2/models/NAME/infer, or a JSON object body on the endpoint's
 *     own route or through a handle call;
 *   - the same with the binary tensor data extension (a request with an
 *     Inference-Header-Content-Length header);
 *   - an application/msgpack map {"inputs": [{"name", "datatype",
 *     "shape", "data": BIN}], "id", "parameters", "outputs": [NAME...]}
 *     (answered as {"id", "outputs": [{"name", "datatype", "shape",
 *     "data": BIN}]}, data in the binary extension's layout);
 *   - a bare row: a JSON array of numbers (nested for higher rank), or an
 *     application/msgpack array of numbers: one FP32 input named "input"
 *     whose shape is the array's. Its answer is the first output alone, as
 *     an array in the same format.
 *
 * Data is row-major and in the machine's byte order (little-endian on
 * every platform serve runs on). A BYTES tensor's data is its elements one
 * after the other, each a 4-byte little-endian length and that many bytes
 * (the binary extension's own layout). BOOL is one byte, 0 or 1. FP16 is
 * IEEE half precision; OIP JSON cannot carry it (use binary or msgpack).
 *
 * A replica that declares inputs (serve_replica_declare_tensor, in init)
 * never sees a request whose body does not decode: the runtime answers it
 * 400 {"error": ...} before handle_batch, saying what is wrong, and hands
 * the plugin only the rest of the batch. The declaration is not enforced
 * on what decodes: the plugin checks the names, datatypes and shapes it
 * needs. Other plugins may still call the
 * reading functions below: they decode on first use and report a bad body
 * through serve_request_input_count's SERVE_EPROTO and
 * serve_request_input_error. The raw-body functions keep working in every
 * case: a plugin that wants bytes never pays for decoding.
 *
 * All of these may be called from any thread while the request is valid
 * (reading: before it is answered), in both isolation modes, one thread at
 * a time per request until the first read has returned (that read
 * decodes; for a replica that declared inputs it happened before
 * handle_batch). Pointers returned are owned by the request and valid
 * until it is answered.
 * ------------------------------------------------------------------------ */

/* The Open Inference Protocol's datatypes. */
enum serve_datatype {
    SERVE_TYPE_INVALID = 0,
    SERVE_TYPE_BOOL,
    SERVE_TYPE_UINT8,
    SERVE_TYPE_UINT16,
    SERVE_TYPE_UINT32,
    SERVE_TYPE_UINT64,
    SERVE_TYPE_INT8,
    SERVE_TYPE_INT16,
    SERVE_TYPE_INT32,
    SERVE_TYPE_INT64,
    SERVE_TYPE_FP16,
    SERVE_TYPE_FP32,
    SERVE_TYPE_FP64,
    SERVE_TYPE_BYTES,
};

/* The most dimensions a tensor may have. */
#define SERVE_MAX_RANK 8

/* Where a declared tensor goes: serve_replica_declare_tensor. */
enum serve_tensor_direction {
    SERVE_INPUT = 0,
    SERVE_OUTPUT = 1,
};

/* One decoded input tensor. Owned by its request. */
typedef struct serve_tensor serve_tensor;

/* "FP32", "BYTES", ... for a datatype; "INVALID" for an unknown one. */
SERVE_EXPORT const char *serve_datatype_name(int datatype);

/* The datatype named `name` ("FP32"), or SERVE_TYPE_INVALID. */
SERVE_EXPORT int serve_datatype_from_name(const char *name);

/* Bytes per element: 1 for BOOL, 4 for FP32, ...; 0 for BYTES (variable)
 * and for an unknown datatype. */
SERVE_EXPORT size_t serve_datatype_size(int datatype);

/* The number of input tensors of `req`, decoding its body on the first
 * call. SERVE_EPROTO when the body is not a tensor body or is malformed
 * (serve_request_input_error says why); SERVE_EINVAL for NULL. */
SERVE_EXPORT int serve_request_input_count(serve_request *req);

/* Input i (0-based, in the order the client sent them), or NULL when out of
 * range or the body did not decode. */
SERVE_EXPORT const serve_tensor *serve_request_input(serve_request *req, size_t i);

/* The input named `name`, or NULL. */
SERVE_EXPORT const serve_tensor *serve_request_input_named(serve_request *req,
                                                           const char *name);

/* Why the body did not decode (one line, e.g. "input 'x': shape [2, 3]
 * holds 6 elements, data has 5"), or NULL when it did. */
SERVE_EXPORT const char *serve_request_input_error(serve_request *req);

/* A request-level parameter (OIP "parameters", or the msgpack map's) as
 * text: a string as it is, a number as written, a boolean as "true" or
 * "false". NULL when absent. */
SERVE_EXPORT const char *serve_request_parameter(serve_request *req, const char *key);

/* A tensor's parts. The shape has serve_tensor_rank entries (a scalar:
 * rank 0); serve_tensor_count is the product of the shape (the number of
 * elements). serve_tensor_data gives the data, suitably aligned for its
 * datatype, and its size in bytes in *bytes (bytes may be NULL). */
SERVE_EXPORT const char *serve_tensor_name(const serve_tensor *t);
SERVE_EXPORT int serve_tensor_datatype(const serve_tensor *t);
SERVE_EXPORT size_t serve_tensor_rank(const serve_tensor *t);
SERVE_EXPORT const int64_t *serve_tensor_shape(const serve_tensor *t);
SERVE_EXPORT size_t serve_tensor_count(const serve_tensor *t);
SERVE_EXPORT const void *serve_tensor_data(const serve_tensor *t, size_t *bytes);

/* Adds an output tensor to the answer being built for `req` (name, data
 * and shape are copied). `bytes` must be count x serve_datatype_size, or
 * for BYTES the length of the length-prefixed elements, whose number must
 * be the shape's count. Then serve_respond_tensors sends the outputs. Call
 * these from the thread that answers. SERVE_EINVAL for a bad argument
 * (unknown datatype, rank over SERVE_MAX_RANK, a negative dimension, a
 * size that disagrees), SERVE_EALREADY when the request was answered. */
SERVE_EXPORT int serve_response_add_tensor(serve_request *req, const char *name,
                                           int datatype, const int64_t *shape,
                                           size_t rank, const void *data,
                                           size_t bytes);

/* Answers 200 with the outputs added so far, encoded in the form the
 * request came in (OIP JSON or binary, msgpack, a bare row; a request
 * without a tensor body gets OIP JSON). For OIP, the request's id is
 * echoed, only the outputs the request named in "outputs" are sent (a
 * name the plugin did not add answers 400 instead), and an output goes
 * binary when the request asked for it (binary_data on the output, or
 * binary_data_output for all). Then as serve_respond. */
SERVE_EXPORT int serve_respond_tensors(serve_request *req);

/* Declares one of the replica's inputs or outputs, for the model metadata
 * of the Open Inference Protocol (GET /v2/models/NAME): its name,
 * datatype, and shape with -1 for a dimension of any size. Call it from
 * init, in the order the tensors should be listed. What replica 0
 * declares is the backend's metadata (for an endpoint split over several
 * backends, its first backend's), and describes the model: requests are
 * not checked against it. A replica that declares at least
 * one input gets its requests decoded before handle_batch (see above).
 * SERVE_EINVAL for a bad argument, SERVE_ESTATE outside init. */
SERVE_EXPORT int serve_replica_declare_tensor(serve_replica *replica, int direction,
                                              const char *name, int datatype,
                                              const int64_t *shape, size_t rank);

/* ------------------------------------------------------------------------
 * Streaming answers
 *
 * A request may be answered as a stream instead of one buffer: begin it
 * with a status and a content type, write any number of pieces, then end
 * it. The client gets the head at once and each piece as it is written:
 * HTTP/1.1 chunked transfer (an HTTP/1.0 client, a HEAD request or a handle
 * call without a chunk callback gets the whole answer at the end, with a
 * length). A `text/event-stream` answer written with serve_stream_event is
 * a stream of Server-Sent Events.
 *
 * Every function below may be called from any thread, in both isolation
 * modes, once the stream has begun; begin itself during handle_batch or on
 * a deferred request. Calls for one stream must not overlap (one producer
 * at a time). A begun stream is the request's answer: it ends with exactly
 * one serve_stream_end or serve_stream_fail, after which the request must
 * not be used again (as after serve_respond). Headers added with
 * serve_response_add_header before begin are sent with the head.
 *
 * Writes never block. Each stream has a bounded buffer (`serve start
 * --stream-buffer`, 256 KiB by default) of what was written and not yet
 * sent to the client. A write that does not fit returns SERVE_EAGAIN and
 * writes nothing (one piece larger than the whole bound goes only into an
 * empty buffer): the plugin may ask to be told when the stream is writable
 * again (serve_stream_on_writable), skip the piece, or give up with
 * serve_stream_fail. Once the client has gone, writes return
 * SERVE_ETIMEDOUT and serve_request_cancelled is 1: the plugin stops
 * producing and still ends the stream (either call; nothing is sent).
 * The request timeout (--request-timeout-ms) stops at the head: a stream
 * runs as long as its plugin writes and its client reads.
 *
 * Results: begin returns SERVE_ETIMEDOUT when nobody waits any more, and
 * the request is then finished (no end follows); a write's SERVE_ETIMEDOUT
 * leaves the stream to be ended as usual. A failed stream that reaches its
 * caller whole (HTTP/1.0, HEAD, a call without a chunk callback) is a 500
 * with {"error": MESSAGE}.
 * ------------------------------------------------------------------------ */

/* Begins the answer of `req` as a stream with `status` (100..599) and a
 * content type (NULL: "application/octet-stream"). Called during
 * handle_batch it also defers the request (serve_request_defer). Returns
 * SERVE_ETIMEDOUT when nobody waits any more (the request is then finished:
 * do not use it again), SERVE_EALREADY when it was answered, SERVE_ESTATE
 * outside handle_batch for a request that was not deferred. */
SERVE_EXPORT int serve_stream_begin(serve_request *req, int status,
                                    const char *content_type);

/* Writes `len` bytes (copied) to the stream. SERVE_OK, SERVE_EAGAIN (the
 * buffer is full: nothing written), SERVE_ETIMEDOUT (the client has gone),
 * SERVE_ESTATE (not begun, or ended). A write of 0 bytes does nothing. */
SERVE_EXPORT int serve_stream_write(serve_request *req, const void *data,
                                    size_t len);

/* Like serve_stream_write, but hands `data` over without a copy: on
 * SERVE_OK the runtime calls free_data(data) once it has been sent or
 * dropped, on any thread (free_data may be NULL for static memory). On any
 * other result nothing was taken: the plugin still owns `data`, so that it
 * can write it again after SERVE_EAGAIN. */
SERVE_EXPORT int serve_stream_write_take(serve_request *req, void *data, size_t len,
                                         void (*free_data)(void *));

/* Writes one Server-Sent Event: an `event:` line when `event` is not NULL,
 * one `data:` line per line of `data`, and the blank line that ends the
 * event. Same results as serve_stream_write; the event goes whole or not
 * at all. */
SERVE_EXPORT int serve_stream_event(serve_request *req, const char *event,
                                    const char *data);

/* Called once, on a runtime thread, when the write the stream last refused
 * with SERVE_EAGAIN fits, or when the client has gone (serve_request_cancelled
 * then says so). It must not block; writing to the stream from it is
 * allowed. Armed again for each wait. */
typedef void (*serve_stream_writable_fn)(serve_request *req, void *arg);

/* Arms `fn` for the next "writable again" of the stream, replacing one
 * armed before. When the refused write fits already, fn is called at once,
 * inside this call, on the calling thread (do not hold a lock that fn
 * takes). SERVE_ESTATE when the stream has not begun or has ended. */
SERVE_EXPORT int serve_stream_on_writable(serve_request *req,
                                          serve_stream_writable_fn fn,
                                          void *arg);

/* Ends the stream well: the client gets the last chunk. SERVE_OK, or
 * SERVE_ETIMEDOUT when the client had gone (nothing more is sent). Either
 * way the request is finished. */
SERVE_EXPORT int serve_stream_end(serve_request *req);

/* Ends the stream with an error after its head was sent: HTTP allows
 * nothing better than closing the connection without the last chunk, so
 * the client sees a truncated answer; the server log names the backend,
 * the request and `message`. The request is finished. SERVE_OK, or
 * SERVE_ETIMEDOUT when the client had gone; SERVE_EALREADY when the stream
 * was already ended. */
SERVE_EXPORT int serve_stream_fail(serve_request *req, const char *message);

/* Called during handle_batch: the plugin will answer `req` later, from any
 * thread, after handle_batch returned. This is how a plugin waits on other
 * work without holding its worker thread. A deferred request still counts
 * against the replica's max_concurrent_queries until it is answered.
 * Returns SERVE_ESTATE when called outside handle_batch. */
SERVE_EXPORT int serve_request_defer(serve_request *req);

/* ------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------ */

/* The value for `key`, or NULL when the key is absent (or config is NULL). */
SERVE_EXPORT const char *serve_config_get(const serve_config *config,
                                          const char *key);

/* Number of entries, and the key and value of entry i (0-based, sorted by
 * key); NULL when i is out of range. */
SERVE_EXPORT size_t serve_config_count(const serve_config *config);
SERVE_EXPORT const char *serve_config_key(const serve_config *config,
                                          size_t i);
SERVE_EXPORT const char *serve_config_value(const serve_config *config,
                                            size_t i);

/* Typed values. Each getter stores the value of `key` in *out and returns
 * SERVE_OK, or stores `def` when the key is absent (also SERVE_OK). A value
 * that is not of the type leaves *out alone and returns SERVE_EINVAL, and
 * the getter keeps a one-line reason naming the key, e.g.
 * "config threads=abc: not an integer": an init that then fails without
 * calling serve_replica_fail gets that reason, which reaches
 * the user (`init failed: config threads=abc: not an integer`), so
 *
 *     int64_t threads;
 *     if (serve_config_int(config, "threads", 1, &threads) != SERVE_OK) return -1;
 *
 * is all a plugin writes. The reason is kept per thread (the last refusal
 * of the calling thread; serve_config_error reads it). Any thread, as the
 * other config functions, in both isolation modes.
 *
 *   int     decimal, optional sign: "8", "-1"
 *   number  what strtod reads, finite: "0.5", "1e-3"
 *   bool    true/false, yes/no, on/off, 1/0, any case
 *   size    bytes, with an optional K, M or G suffix (powers of 1024): "512M"
 *   path    a relative value is resolved against the folder of the deploy
 *           file that set it, or the working directory of the `serve`
 *           command that set it (`--config`); an absolute one is kept.
 *           `out` gets a NUL-terminated path of at most outlen - 1 bytes;
 *           SERVE_EINVAL when it does not fit. A NULL `def` with the key
 *           absent gives "". */
SERVE_EXPORT int serve_config_int(const serve_config *config, const char *key, int64_t def,
                                  int64_t *out);
SERVE_EXPORT int serve_config_number(const serve_config *config, const char *key, double def,
                                     double *out);
SERVE_EXPORT int serve_config_bool(const serve_config *config, const char *key, int def,
                                   int *out);
SERVE_EXPORT int serve_config_size(const serve_config *config, const char *key, uint64_t def,
                                   uint64_t *out);
SERVE_EXPORT int serve_config_path(const serve_config *config, const char *key, const char *def,
                                   char *out, size_t outlen);
/* The calling thread's last refusal by a typed getter; "" when none. */
SERVE_EXPORT const char *serve_config_error(void);

/* ------------------------------------------------------------------------
 * The replica context
 * ------------------------------------------------------------------------ */

/* The backend this replica belongs to. */
SERVE_EXPORT const char *serve_replica_backend(const serve_replica *replica);

/* The replica's index, 0 .. num_replicas - 1. Stable for the replica's life;
 * a replacement replica may reuse an index. */
SERVE_EXPORT int serve_replica_index(const serve_replica *replica);

/* Records why init failed; the message (printf-style, truncated at 1 KiB)
 * reaches the CLI user as "plugin PATH: init failed: MESSAGE". Call it only
 * from init, before returning non-zero. */
SERVE_EXPORT void serve_replica_fail(serve_replica *replica, const char *fmt,
                                     ...) SERVE_PRINTF(2, 3);

/* Continuous batching. Called during handle_batch: call handle_batch of
 * this replica again as soon as this one returns, with the requests that
 * arrived meanwhile (possibly none: then n is 0 and `requests` NULL). A
 * generation loop calls it while it holds open streams, runs one step of
 * every open stream per handle_batch, and so admits new requests between
 * its steps instead of after its longest generation. Once a replica has
 * called it, the requests it holds deferred (its open streams) count
 * against max_batch_size: open plus new never exceed it. Without the call,
 * handle_batch runs only when requests wait (1 <= n), as always. The
 * counting stays on for the replica's life, and covers every request it
 * holds deferred (streams, and requests it keeps to admit later); no batch
 * wait applies while it holds some. The plugin keeps the serve_replica of
 * its init to call this. A loop whose every stream waits for room still
 * runs its steps: a real model's step takes its time, a simulated one
 * should sleep or skip rather than spin. When the backend stops (an
 * update, a delete, the server's stop), a replica that asks for steps
 * keeps getting them (n is 0) for up to 8 s, so that its open streams end
 * before destroy. Returns SERVE_ESTATE outside handle_batch. */
SERVE_EXPORT int serve_replica_continue(serve_replica *replica);

/* Log levels for serve_log. */
enum serve_log_level {
    SERVE_LOG_ERROR = 0,
    SERVE_LOG_WARN = 1,
    SERVE_LOG_INFO = 2,
    SERVE_LOG_DEBUG = 3,
};

/* Writes one line to the server log, prefixed with the backend and replica.
 * replica may be NULL. Any thread. */
SERVE_EXPORT void serve_log(const serve_replica *replica, int level,
                            const char *fmt, ...) SERVE_PRINTF(3, 4);

/* ------------------------------------------------------------------------
 * Handles: calling other endpoints (model composition)
 *
 * A plugin calls any endpoint by name, routed or handle-only. A call takes
 * the same path as an HTTP request to that endpoint (routing, the target's
 * batching, backpressure and timeout) without HTTP: no socket, no parsing.
 * Many calls may be in flight at once, from one request and from one
 * replica.
 *
 * The recommended style is asynchronous: in handle_batch, defer the outer
 * request (serve_request_defer), send the calls with a callback, and answer
 * the outer request from the last callback. The worker thread is then free
 * for the next batch while the calls are out, and nothing can deadlock.
 *
 *     static void on_score(const serve_result *r, void *arg)
 *     {
 *         serve_request *outer = arg;
 *         size_t len;
 *         const void *body = serve_result_body(r, &len);
 *         serve_respond(outer, serve_result_status(r),
 *                       serve_result_content_type(r), body, len);
 *     }
 *
 *     // in handle_batch, for each request `req`:
 *     serve_request_defer(req);
 *     serve_call *call = serve_call_new(scorer_handle, req);
 *     size_t len;
 *     const void *body = serve_request_body(req, &len);
 *     serve_call_set_body(call, body, len);
 *     serve_call_send(call, on_score, req);
 *
 * Futures (serve_call_send_future + serve_future_wait) suit plugin-owned
 * threads. Waiting on a future inside handle_batch blocks the replica: never
 * wait there for a call that needs the same replica (its own backend with
 * one replica), or the wait lasts until the target's request timeout.
 *
 * Calls may nest: a call's target may call further, and a backend may call
 * its own endpoint. A call into a backend that is already working on one of
 * the call's ancestors does not wait for a free max_concurrent_queries slot
 * (its ancestor holds one for it), so recursion through deferred requests
 * cannot deadlock. A chain deeper than SERVE_MAX_CALL_DEPTH is cut: that
 * call's result is 508 (Loop Detected) and the server log names the backend
 * and replica that made it.
 * ------------------------------------------------------------------------ */

/* Calls nested deeper than this (HTTP request -> call -> call ...) get 508. */
#define SERVE_MAX_CALL_DEPTH 16

typedef struct serve_handle serve_handle;   /* a callable endpoint name */
typedef struct serve_call serve_call;       /* one call being built */
typedef struct serve_result serve_result;   /* the target's answer */
typedef struct serve_future serve_future;   /* an answer to wait for */

/* Returns a handle to the endpoint named `endpoint`, owned by the replica
 * and valid until destroy returns. The name is resolved at each call, so an
 * endpoint created later, or replaced, is found. Asking again for the same
 * name returns the same handle. NULL on bad arguments or out of memory. Any
 * thread. */
SERVE_EXPORT serve_handle *serve_replica_handle(serve_replica *replica,
                                                const char *endpoint);

/* Starts a call through `handle`. `parent`, when not NULL, is the request
 * this call serves: the call carries its request id (logs and access logs
 * then tie them together). The call is owned by the caller until it is sent.
 * NULL on bad arguments or out of memory. Any thread. */
SERVE_EXPORT serve_call *serve_call_new(serve_handle *handle,
                                        const serve_request *parent);

/* Sets the call's body (copied). */
SERVE_EXPORT int serve_call_set_body(serve_call *call, const void *body,
                                     size_t len);

/* Sets the call's body without a copy; the runtime calls free_body(body)
 * (if not NULL) when the target is done with it, on any thread, and also
 * when this function fails. */
SERVE_EXPORT int serve_call_take_body(serve_call *call, void *body, size_t len,
                                      void (*free_body)(void *));

/* Adds a query parameter or a header the target reads with
 * serve_request_query / serve_request_header. Strings are copied. */
SERVE_EXPORT int serve_call_add_query(serve_call *call, const char *key,
                                      const char *value);
SERVE_EXPORT int serve_call_add_header(serve_call *call, const char *name,
                                       const char *value);

/* Sets the call's shard key: for a target endpoint split over several
 * backends, the same key always reaches the same backend (the header
 * X-Serve-Shard-Key does the same over HTTP). */
SERVE_EXPORT int serve_call_set_shard_key(serve_call *call, const char *key);

/* Called exactly once with the target's answer. `result` is valid only
 * during the call. It runs on a runtime or plugin thread (possibly before
 * serve_call_send returns, for an immediate error such as 404 or 503), so it
 * must not block; answering a deferred request from it is the intended use.
 * Errors of the target arrive as results: 404 (no such endpoint), 503
 * (target overloaded), 504 (target timeout), 500 (target plugin failure),
 * 508 (nested too deep), 499 (the call was cancelled), each with a JSON
 * body {"error": "..."}. */
typedef void (*serve_call_done_fn)(const serve_result *result, void *arg);

/* Sends the call; the call object is consumed in every case. Returns 0 when
 * `done` will be (or was) called; on SERVE_EINVAL (call or done NULL) it is
 * never called.
 * Order rule: when `done` answers a request of the batch, call
 * serve_request_defer on that request BEFORE this: `done` may run before
 * serve_call_send returns, and a request answered while not deferred was
 * answered inside handle_batch (a later defer fails with SERVE_ESTATE). For
 * several calls per request, defer once, send them all, and answer from the
 * last callback to finish (serve-plugin(3) has such a fan-out). */
SERVE_EXPORT int serve_call_send(serve_call *call, serve_call_done_fn done,
                                 void *arg);

/* Called with each piece of the target's answer when it streams (see
 * "Streaming answers"), in order, before `done`; `arg` is the one given to
 * serve_call_send; `data` is valid only during the call. `done` then gets
 * the status, content type and headers with an empty body (500 and
 * {"error": ...} when the stream failed). A target that does not stream
 * gets `done` alone, as without this. Same threads and rules as `done`: it
 * must not block. Writing the piece on to a stream of the caller's own is
 * the intended use; the target is not slowed when that stream is full
 * (SERVE_EAGAIN), so the caller keeps or drops what does not fit. */
typedef void (*serve_call_chunk_fn)(const void *data, size_t len, void *arg);

/* Asks for the target's stream piece by piece; before serve_call_send.
 * SERVE_EINVAL when call or chunk is NULL. */
SERVE_EXPORT int serve_call_on_chunk(serve_call *call, serve_call_chunk_fn chunk);

/* Cancels the calls made for `req` (serve_call_new's parent) that have not
 * finished: each target drops its call if it is still queued, or sees it
 * cancelled (serve_request_cancelled, its cancel callback) if it runs, and
 * so on down the calls those made; each callback gets 499 at once. The
 * runtime does this by itself when `req` is cancelled (its client went
 * away, or it timed out). A plugin calls it when it no longer needs the
 * answers, e.g. after the first of several replies. Any thread, while
 * `req` is valid. The callbacks of the cancelled calls may run inside this
 * call, on the calling thread (in a process replica: later, on its results
 * thread). Returns SERVE_OK, or SERVE_EINVAL for NULL. */
SERVE_EXPORT int serve_request_cancel_calls(serve_request *req);

/* Sends the call and returns a future for its answer (NULL only when out of
 * memory; the call is consumed either way). */
SERVE_EXPORT serve_future *serve_call_send_future(serve_call *call);

/* Blocks until the answer is there and returns it; the result stays valid
 * until serve_future_free. Any thread (see the warning above). */
SERVE_EXPORT const serve_result *serve_future_wait(serve_future *future);

/* Frees a future, waiting for its answer first if it has not come yet.
 * NULL is a harmless no-op. */
SERVE_EXPORT void serve_future_free(serve_future *future);

/* The parts of a result: HTTP-style status, content type, body (len may be
 * NULL) and any header the target added (case-insensitive; NULL if absent).
 * Strings and body are owned by the result. */
SERVE_EXPORT int serve_result_status(const serve_result *result);
SERVE_EXPORT const char *serve_result_content_type(const serve_result *result);
SERVE_EXPORT const void *serve_result_body(const serve_result *result,
                                           size_t *len);
SERVE_EXPORT const char *serve_result_header(const serve_result *result,
                                             const char *name);

#ifdef __cplusplus
}
#endif

#endif /* SERVE_PLUGIN_H */
