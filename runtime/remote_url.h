/* remote_url.h - the URLs of a remote backend (`--remote URL[,URL...]`,
 * `remote:` in deploy files): parsed and checked here, so that the CLI, the
 * deploy file and the server refuse the same lists with the same words.
 *
 * A URL is http://HOST[:PORT][/PATH]: plain HTTP/1.1 (TLS belongs to the
 * proxy or the mesh in front of the remote), no user, query or fragment.
 * PATH is the remote route that requests are forwarded to. */
#ifndef SERVE_RUNTIME_REMOTE_URL_H
#define SERVE_RUNTIME_REMOTE_URL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REMOTE_URLS_MAX 16

struct remote_url {
    char *text;   /* as written, for messages */
    char *host;   /* name or address, without brackets */
    uint16_t port;
    char *path;   /* "" or "/..." without a trailing slash */
    char *host_header; /* the Host header's value: host[:port] */
};

/* Parses "URL[,URL...]" (spaces around commas allowed). On failure returns
 * false with one line in err naming the URL at fault. */
bool remote_urls_parse(const char *list, struct remote_url **out, size_t *count, char *err,
                       size_t errlen);
void remote_urls_free(struct remote_url *urls, size_t count);

/* Writes into buf (size len) the path to request on the remote: the URL's
 * path followed by `suffix` (the part of the local, percent-decoded path
 * past the endpoint's route, "" or "/..."), percent-encoded again, "/" when
 * both are empty. false, with why, when it does not fit or when the suffix
 * holds a "." or ".." segment (which would leave the URL's path). */
bool remote_target_path(const struct remote_url *url, const char *suffix, char *buf, size_t len,
                        const char **why);

#endif
