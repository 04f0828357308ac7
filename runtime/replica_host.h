/* replica_host.h - the main of a process replica (replica_host.c): what
 * `serve __replica-host` runs, spawned by its server. */
#ifndef SERVE_RUNTIME_REPLICA_HOST_H
#define SERVE_RUNTIME_REPLICA_HOST_H

int replica_host_main(int argc, char **argv);

#endif
