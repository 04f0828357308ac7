/* fuzz_control.c - libFuzzer target for the control plane's decoders: a
 * control frame's msgpack and the specs in it (backend, endpoint, a whole
 * deployment), as the control socket receives them; and the same bytes read
 * back as a state file, through the loader serve runs at start. */
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "deployment.h"
#include "mp.h"
#include "mp_bounds.h"
#include "spec.h"

/* The state-file half needs a real file: the loader follows no symlink,
 * /proc/self/fd's included. */
static char state_path[] = "/tmp/fuzz_control_state.XXXXXX";
static int state_fd = -1;

static void remove_state_file(void) { unlink(state_path); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    size_t off = 0;
    char err[2048];
    /* As control.c does: the bounds first, then msgpack-c. */
    size_t used = 0;
    while (mp_bounded((const char *)data + off, size - off, &used) &&
           msgpack_unpack_next(&msg, (const char *)data, size, &off) == MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *o = &msg.data;
        struct backend_spec b;
        if (backend_spec_unpack(mp_get(o, "backend"), &b, err, sizeof err)) backend_spec_free(&b);
        if (backend_spec_unpack(o, &b, err, sizeof err)) backend_spec_free(&b);
        struct endpoint_spec e;
        if (endpoint_spec_unpack(mp_get(o, "endpoint"), &e, err, sizeof err))
            endpoint_spec_free(&e);
        struct deployment d;
        if (deployment_unpack(o, &d, err, sizeof err)) {
            deployment_valid(&d, err, sizeof err);
            deployment_free(&d);
        }
        char *s = NULL;
        if (mp_as_str(mp_get(o, "cmd"), &s)) free(s);
        uint64_t u;
        double x;
        bool flag;
        mp_as_uint(mp_get(o, "timeout"), &u);
        mp_as_double(mp_get(o, "weight"), &x);
        mp_as_bool(mp_get(o, "json"), &flag);
    }
    msgpack_unpacked_destroy(&msg);

    if (state_fd < 0 && (state_fd = mkstemp(state_path)) >= 0) atexit(remove_state_file);
    if (ftruncate(state_fd, 0) == 0 && pwrite(state_fd, data, size, 0) == (ssize_t)size) {
        struct deployment d;
        if (deployment_load(&d, state_path, err, sizeof err)) deployment_free(&d);
    }
    return 0;
}
