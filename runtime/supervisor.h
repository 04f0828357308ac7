/* supervisor.h - the process above the server process (SPEC 6a).
 *
 * The supervisor takes the state dir's lock, opens the HTTP listening
 * socket, and runs the server (server_run) in a forked child process that
 * shares both. When the server process dies (of a signal, or by an exit it
 * did not announce), the supervisor logs it and starts a new one on the
 * same socket; the new one restores the persisted state, and connections
 * that arrive meanwhile wait in the listen backlog: no client sees a
 * refused connection. Restarts back off from 100 ms, doubling to 5 s, back
 * to 100 ms after a server process that ran for 60 s.
 *
 * The supervisor is single-threaded and stays so (it forks server
 * processes, and a fork copies only the calling thread). Its pid is the one
 * in STATE_DIR/serve.pid; a server process dies with it (PR_SET_PDEATHSIG),
 * and the lock is free once both are gone. */
#ifndef SERVE_RUNTIME_SUPERVISOR_H
#define SERVE_RUNTIME_SUPERVISOR_H

#include "server.h"

/* Supervises server processes run with options `o` until one exits on
 * purpose, and returns the exit status for the calling process: the
 * server's (0 after a stop; non-zero after a failed start, which is never
 * retried). In a server process, it returns server_run's status instead,
 * which the caller returns as it would server_run's.
 *
 * o->on_started is called once, in the supervisor: with the first server's
 * URL, or with why the server could not start. SIGTERM and SIGINT to the
 * supervisor stop the server gracefully, then the supervisor. o->deploy_file
 * is applied by the first server process only: later ones restore the state
 * dir, which holds it. `close_in_server` is a descriptor of the caller's
 * that server processes must not keep open (-1: none). */
int supervisor_run(const struct server_options *o, int close_in_server);

#endif
