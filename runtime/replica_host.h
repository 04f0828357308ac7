/* replica_host.h - the main of a process replica (replica_host.c): what
 * `serve __replica-host` runs, spawned by its server. */
#ifndef SERVE_RUNTIME_REPLICA_HOST_H
#define SERVE_RUNTIME_REPLICA_HOST_H

#include <stdbool.h>

int replica_host_main(int argc, char **argv);

/* A program that creates process replicas passes its argv[0] first thing,
 * after handing `__replica-host` to replica_host_main: replicas are
 * spawned from the same binary (found through argv[0] when /proc/self/exe
 * is not that binary, under valgrind). Without this call, process replicas
 * are refused: a program that cannot host them would run itself again. */
void replica_process_note_argv0(const char *argv0);
bool replica_process_supported(void);

#endif
