/* main.c - the serve command: global options, then one subcommand from the
 * table below. Each subcommand lives in a cmd_*.c file with its help text. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../runtime/replica_host.h"
#include "cli.h"

static const struct cli_command *const commands[] = {
    &cmd_start,           &cmd_stop,           &cmd_status,
    &cmd_create_backend,  &cmd_update_backend, &cmd_delete_backend, &cmd_list_backends,
    &cmd_create_endpoint, &cmd_delete_endpoint, &cmd_list_endpoints,
    &cmd_set_traffic,     &cmd_shadow_traffic, &cmd_deploy,         &cmd_call,
    &cmd_bench,           &cmd_try,
};
#define COMMAND_COUNT (sizeof commands / sizeof *commands)

static void print_usage(FILE *out)
{
    fprintf(out,
            "usage: serve [--state-dir DIR] [--control-timeout S] COMMAND [ARGS]\n"
            "\n"
            "A model server: plugins (.so) as backends, batching, HTTP endpoints.\n"
            "\n"
            "Commands:\n");
    for (size_t i = 0; i < COMMAND_COUNT; i++)
        fprintf(out, "  %-16s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(out,
            "\n"
            "Every command takes --state-dir DIR (env SERVE_STATE_DIR; default\n"
            "$XDG_STATE_HOME/serve, else ~/.local/state/serve): the folder with the\n"
            "server's control socket, state file, pid file and log. It must be a\n"
            "folder of yours that group and other cannot write, not a symlink.\n"
            "Commands that talk to the server take --control-timeout S: give up when\n"
            "the server has not answered in S seconds (default 30; 0: no limit).\n"
            "`serve COMMAND --help` describes one command, as does man serve-COMMAND;\n"
            "man serve(1) has the overview. `serve --version` prints the version.\n");
}

void cli_print_help(const struct cli_command *c)
{
    printf("usage: serve %s\n\n%s\n\n%s", c->usage, c->summary, c->help);
    /* try runs without a server; every other command but start talks to a
     * running one. */
    if (c != &cmd_try) printf("  --state-dir DIR   the server's state folder (env SERVE_STATE_DIR)\n");
    if (c != &cmd_start && c != &cmd_try)
        printf("  --control-timeout S\n"
               "                    give up when the server has not answered in S seconds\n"
               "                    (default 30; 0: no limit)\n");
    printf("  -h, --help        show this help\n");
}

static char *default_state_dir(void)
{
    const char *env = getenv("SERVE_STATE_DIR");
    char buf[PATH_MAX];
    if (env && *env) {
        snprintf(buf, sizeof buf, "%s", env);
    } else if (getenv("XDG_STATE_HOME") && *getenv("XDG_STATE_HOME")) {
        snprintf(buf, sizeof buf, "%s/serve", getenv("XDG_STATE_HOME"));
    } else {
        const char *home = getenv("HOME");
        snprintf(buf, sizeof buf, "%s/.local/state/serve", home && *home ? home : "/tmp");
    }
    return strdup(buf);
}

/* The server changes its working directory to nothing else, but the CLI and
 * server may run from different folders: always hand over an absolute path. */
static char *absolute(char *path)
{
    if (!path) return path;
    /* "dir/" names dir: the trailing slashes go (the state dir's checks
     * refuse a path that ends in one, as it would follow a symlink). */
    for (size_t len = strlen(path); len > 1 && path[len - 1] == '/'; len--) path[len - 1] = '\0';
    if (path[0] == '/') return path;
    char cwd[PATH_MAX], buf[PATH_MAX * 2];
    if (!getcwd(cwd, sizeof cwd)) return path;
    snprintf(buf, sizeof buf, "%s/%s", cwd, path);
    free(path);
    return strdup(buf);
}

/* --control-timeout SECONDS, wherever it appears (as --state-dir): 0 on
 * success, else the exit status for a one-line error. */
static int take_control_timeout(const char *value)
{
    if (!value) {
        fprintf(stderr, "serve: --control-timeout needs a number of seconds\n");
        return 2;
    }
    if (!cli_parse_double(value, 0, 86400, &cli_control_timeout_s)) {
        fprintf(stderr, "serve: --control-timeout %s: expected seconds, 0 (no limit) to 86400\n",
                value);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    /* A process replica, spawned by a server (not a user command). */
    if (argc > 1 && strcmp(argv[1], "__replica-host") == 0) return replica_host_main(argc, argv);
    replica_process_note_argv0(argv[0]);
    char *state_dir = NULL;
    /* Take the global options out wherever they appear, so every subcommand
     * has them. */
    int kept = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--state-dir") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "serve: --state-dir needs a folder\n");
                return 2;
            }
            free(state_dir);
            state_dir = strdup(argv[++i]);
        } else if (strncmp(argv[i], "--state-dir=", 12) == 0) {
            free(state_dir);
            state_dir = strdup(argv[i] + 12);
        } else if (strcmp(argv[i], "--control-timeout") == 0 ||
                   strncmp(argv[i], "--control-timeout=", 18) == 0) {
            const char *value = argv[i][17] == '=' ? argv[i] + 18 : i + 1 < argc ? argv[++i] : NULL;
            int rc = take_control_timeout(value);
            if (rc) {
                free(state_dir);
                return rc;
            }
        } else {
            argv[kept++] = argv[i];
        }
    }
    argc = kept;
    argv[argc] = NULL;
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        print_usage(stdout);
        free(state_dir);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("serve %s (plugin SDK ABI %u)\n", SERVE_VERSION, 1u);
        free(state_dir);
        return 0;
    }
    for (size_t i = 0; i < COMMAND_COUNT; i++) {
        if (strcmp(argv[1], commands[i]->name) != 0) continue;
        for (int a = 2; a < argc; a++) {
            if (strcmp(argv[a], "--") == 0) break;
            if (strcmp(argv[a], "--help") == 0 || strcmp(argv[a], "-h") == 0) {
                cli_print_help(commands[i]);
                free(state_dir);
                return 0;
            }
        }
        if (!state_dir) state_dir = default_state_dir();
        state_dir = absolute(state_dir);
        int rc = commands[i]->run(argc - 1, argv + 1, state_dir);
        free(state_dir);
        return rc;
    }
    fprintf(stderr, "serve: unknown command '%s'; `serve --help` lists the commands\n", argv[1]);
    free(state_dir);
    return 2;
}
