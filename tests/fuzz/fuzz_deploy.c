/* fuzz_deploy.c - libFuzzer target for the deploy-file loader: the bytes
 * are a deploy file, read through libyaml and checked as `serve deploy`
 * does, every error naming a line. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "deploy_file.h"

/* Bare plugin names in the files resolve to the build's plugins. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setenv("SERVE_PLUGIN_PATH", SERVE_FUZZ_PLUGIN_DIR, 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    if (fd < 0) fd = memfd_create("deploy.yaml", 0);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size) abort();
    struct deployment d;
    char err[2048];
    bool ok = deploy_file_load(path, &d, err, sizeof err);
    if (getenv("SERVE_FUZZ_VERBOSE")) fprintf(stderr, "%s\n", ok ? "ok" : err);
    if (ok) {
        deployment_free(&d);
    } else if (strncmp(err, path, strlen(path)) != 0) {
        fprintf(stderr, "fuzz_deploy: an error that does not name the file: %s\n", err);
        abort();
    }
    return 0;
}
