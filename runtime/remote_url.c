/* remote_url.c - parsing a remote backend's URL list (see remote_url.h).
 * The URL grammar is libevent's (evhttp_uri_parse); what is checked here is
 * what serve accepts of it. */
#include "remote_url.h"

#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void remote_urls_free(struct remote_url *urls, size_t count)
{
    for (size_t i = 0; urls && i < count; i++) {
        free(urls[i].text);
        free(urls[i].host);
        free(urls[i].path);
        free(urls[i].host_header);
    }
    free(urls);
}

static bool parse_one(const char *text, struct remote_url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    struct evhttp_uri *uri = evhttp_uri_parse_with_flags(text, 0);
    if (!uri) {
        snprintf(err, errlen, "remote URL %s: not a URL", text);
        return false;
    }
    const char *scheme = evhttp_uri_get_scheme(uri);
    const char *host = evhttp_uri_get_host(uri);
    const char *path = evhttp_uri_get_path(uri);
    int port = evhttp_uri_get_port(uri);
    bool ok = false;
    if (!scheme || strcmp(scheme, "http") != 0)
        snprintf(err, errlen,
                 "remote URL %s: the scheme must be http (TLS belongs to a proxy in front of the "
                 "remote)",
                 text);
    else if (!host || !*host)
        snprintf(err, errlen, "remote URL %s: no host", text);
    else if (evhttp_uri_get_userinfo(uri) || evhttp_uri_get_query(uri) ||
             evhttp_uri_get_fragment(uri))
        snprintf(err, errlen, "remote URL %s: no user, query or fragment allowed", text);
    else if (port == 0 || port > 65535)
        snprintf(err, errlen, "remote URL %s: bad port", text);
    else
        ok = true;
    if (ok) {
        u->text = strdup(text);
        size_t host_len = strlen(host);
        if (host[0] == '[' && host_len > 2 && host[host_len - 1] == ']') /* IPv6 */
            u->host = strndup(host + 1, host_len - 2);
        else
            u->host = strdup(host);
        u->port = port < 0 ? 80 : (uint16_t)port;
        size_t path_len = path ? strlen(path) : 0;
        while (path_len && path[path_len - 1] == '/') path_len--;
        u->path = strndup(path ? path : "", path_len);
        size_t hl = host_len + 16;
        u->host_header = malloc(hl); /* as written: an IPv6 address keeps its brackets */
        if (u->host_header) {
            if (port < 0)
                snprintf(u->host_header, hl, "%s", host);
            else
                snprintf(u->host_header, hl, "%s:%d", host, port);
        }
        ok = u->text && u->host && u->path && u->host_header;
        if (!ok) snprintf(err, errlen, "remote URL %s: out of memory", text);
    }
    evhttp_uri_free(uri);
    return ok;
}

bool remote_urls_parse(const char *list, struct remote_url **out, size_t *count, char *err,
                       size_t errlen)
{
    *out = NULL;
    *count = 0;
    struct remote_url *urls = calloc(REMOTE_URLS_MAX, sizeof *urls);
    if (!urls) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    size_t n = 0;
    const char *p = list ? list : "";
    for (;;) {
        while (*p == ' ' || *p == '\t') p++;
        size_t len = strcspn(p, ",");
        size_t trimmed = len;
        while (trimmed && (p[trimmed - 1] == ' ' || p[trimmed - 1] == '\t')) trimmed--;
        if (trimmed == 0) {
            snprintf(err, errlen, "remote: an empty URL in \"%s\"", list ? list : "");
            goto fail;
        }
        if (n == REMOTE_URLS_MAX) {
            snprintf(err, errlen, "remote: at most %d URLs", REMOTE_URLS_MAX);
            goto fail;
        }
        char *one = strndup(p, trimmed);
        bool ok = one && parse_one(one, &urls[n], err, errlen);
        free(one);
        if (!ok) goto fail;
        n++;
        if (!p[len]) break;
        p += len + 1;
    }
    *out = urls;
    *count = n;
    return true;
fail:
    remote_urls_free(urls, n < REMOTE_URLS_MAX ? n + 1 : n); /* n + 1: the one that failed */
    return false;
}

/* What a path segment may hold as it is (RFC 3986 pchar, less '%'). */
static bool path_char_plain(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           strchr("-._~!$&'()*+,;=:@/", ch) != NULL;
}

static bool dot_segment(const char *s, size_t len)
{
    return (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.');
}

bool remote_target_path(const struct remote_url *url, const char *suffix, char *buf, size_t len,
                        const char **why)
{
    static const char hex[] = "0123456789ABCDEF";
    if (!suffix) suffix = "";
    for (const char *seg = suffix; *seg;) {
        while (*seg == '/') seg++;
        size_t n = strcspn(seg, "/");
        if (dot_segment(seg, n)) {
            *why = "a . or .. segment in the path";
            return false;
        }
        seg += n;
    }
    size_t n = strlen(url->path);
    if (n + 2 > len) goto too_long;
    memcpy(buf, url->path, n);
    if (*suffix && *suffix != '/') buf[n++] = '/';
    for (const unsigned char *p = (const unsigned char *)suffix; *p; p++) {
        if (n + 4 > len) goto too_long;
        if (path_char_plain(*p)) {
            buf[n++] = (char)*p;
        } else {
            buf[n++] = '%';
            buf[n++] = hex[*p >> 4];
            buf[n++] = hex[*p & 15];
        }
    }
    if (n == 0) buf[n++] = '/';
    buf[n] = '\0';
    return true;
too_long:
    *why = "the path is too long";
    return false;
}
