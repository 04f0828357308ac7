/* state_dir.h - the state dir is trusted only when it is the user's own.
 *
 * Whoever can write the state dir can plant a state file that loads their
 * plugins into the server, symlinks that make the server write through them,
 * or a socket of their own that reads every command the CLI sends. So the
 * server (before it reads or writes anything there) and the CLI (before it
 * talks to the socket there) both insist on a folder that is not a symlink,
 * is owned by the effective user, and that group and other cannot write; and
 * no file in it is opened through a symlink. */
#ifndef SERVE_RUNTIME_STATE_DIR_H
#define SERVE_RUNTIME_STATE_DIR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* For the server: creates `path` (and missing parents) mode 0700, refuses it
 * as state_dir_check does, and makes it 0700. False with err set
 * ("state dir /x is a symlink; ...") when it cannot be trusted or made
 * private. */
bool state_dir_prepare(const char *path, char *err, size_t errlen);

/* For the CLI: false with err set when `path` exists and is not a private
 * folder of the effective user; true when it is, or when it does not exist
 * (then no server runs there either). Changes nothing. */
bool state_dir_check(const char *path, char *err, size_t errlen);

/* open(2) for a file in the state dir: close-on-exec and never through a
 * symlink. -1 with errno set on failure; state_dir_strerror words it. */
int state_dir_open(const char *path, int flags, mode_t mode);

/* Takes the state dir's lock, an flock on STATE_DIR/serve.pid held for as
 * long as the returned descriptor (or a copy of it, in this process or a
 * forked one) is open, and writes our pid there: a second server on the
 * same state dir is refused. -1 with err set ("another server (pid N)
 * already runs on state dir D") on failure. Call after state_dir_prepare. */
int state_dir_lock(const char *state_dir, char *err, size_t errlen);

/* strerror(err), except that the ELOOP of a symlink refused by
 * state_dir_open says so and what to do. */
const char *state_dir_strerror(int err);

#endif
