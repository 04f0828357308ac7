/* replica_host.h - the main of a process replica (replica_host.c): what
 * `serve __replica-host` runs, spawned by its server. */
#ifndef SERVE_RUNTIME_REPLICA_HOST_H
#define SERVE_RUNTIME_REPLICA_HOST_H

int replica_host_main(int argc, char **argv);

/* The server's main passes its argv[0]: process replicas are spawned from
 * the same binary, found through it when /proc/self/exe is not that
 * binary (under valgrind). */
void replica_process_note_argv0(const char *argv0);

#endif
