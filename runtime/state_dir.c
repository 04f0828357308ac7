/* state_dir.c - the checks that make the state dir trusted (see state_dir.h). */
#include "state_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* mkdir -p with mode 0700 for what it creates. */
static bool make_dirs(const char *path, char *err, size_t errlen)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST) {
                snprintf(err, errlen, "state dir %s: %s", buf, strerror(errno));
                return false;
            }
            *p = saved;
            if (!saved) break;
        }
    }
    return true;
}

/* The rules, on what lstat(2) says of the state dir itself. */
static bool trusted(const char *path, const struct stat *st, char *err, size_t errlen)
{
    if (S_ISLNK(st->st_mode)) {
        snprintf(err, errlen, "state dir %s is a symlink; use the folder it points to, if it is yours",
                 path);
        return false;
    }
    if (!S_ISDIR(st->st_mode)) {
        snprintf(err, errlen, "state dir %s is not a folder", path);
        return false;
    }
    if (st->st_uid != geteuid()) {
        snprintf(err, errlen, "state dir %s is not owned by you (uid %lu); use a dir of your own",
                 path, (unsigned long)st->st_uid);
        return false;
    }
    if (st->st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(err, errlen,
                 "state dir %s is writable by group or other (mode %04o); use a private dir (chmod 700)",
                 path, (unsigned)(st->st_mode & 07777));
        return false;
    }
    return true;
}

/* lstat(2) of "link/" or "link/." follows the link, so the rules would
 * judge its target. A state dir path must name the folder itself: it may
 * not end in a slash, ".", or "..". */
static bool plain_path(const char *path, char *err, size_t errlen)
{
    size_t len = strlen(path);
    const char *last = strrchr(path, '/');
    last = last ? last + 1 : path;
    if ((len > 1 && path[len - 1] == '/') || strcmp(last, ".") == 0 || strcmp(last, "..") == 0) {
        snprintf(err, errlen, "state dir %s: name the folder itself, without a trailing /, . or ..",
                 path);
        return false;
    }
    return true;
}

bool state_dir_check(const char *path, char *err, size_t errlen)
{
    if (!plain_path(path, err, errlen)) return false;
    struct stat st;
    if (lstat(path, &st) != 0) return true; /* nothing there to trust or fear */
    return trusted(path, &st, err, errlen);
}

bool state_dir_prepare(const char *path, char *err, size_t errlen)
{
    if (!plain_path(path, err, errlen) || !make_dirs(path, err, errlen)) return false;
    struct stat st;
    if (lstat(path, &st) != 0) {
        snprintf(err, errlen, "state dir %s: %s", path, strerror(errno));
        return false;
    }
    if (!trusted(path, &st, err, errlen)) return false;
    /* Changed through a descriptor of the very folder checked: a symlink
     * swapped in since the lstat is refused, never followed. */
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat opened;
    const char *why = NULL;
    if (fd < 0 || fstat(fd, &opened) != 0)
        why = strerror(errno);
    else if (opened.st_dev != st.st_dev || opened.st_ino != st.st_ino)
        why = "it was replaced while being checked";
    else if ((opened.st_mode & 07777) != 0700 && fchmod(fd, 0700) != 0)
        why = strerror(errno);
    if (why) snprintf(err, errlen, "state dir %s: cannot make it private (chmod 700): %s", path, why);
    if (fd >= 0) close(fd);
    return why == NULL;
}

int state_dir_open(const char *path, int flags, mode_t mode)
{
    return open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode);
}

const char *state_dir_strerror(int err)
{
    if (err == ELOOP)
        return "it is a symlink, and serve follows no symlink in its state dir (remove it)";
    return strerror(err);
}

int state_dir_lock(const char *state_dir, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/serve.pid", state_dir);
    int fd = state_dir_open(path, O_RDWR | O_CREAT, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "lock file %s: %s", path, state_dir_strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "?";
        ssize_t n = read(fd, pid, sizeof pid - 1);
        pid[n > 0 ? n : 1] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        snprintf(err, errlen, "another server (pid %s) already runs on state dir %s", pid,
                 state_dir);
        close(fd);
        return -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        LOG_WARN("cannot write pid to %s", path);
    return fd;
}
