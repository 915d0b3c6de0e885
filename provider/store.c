/* The state directory: functions.json (loaded at start, rewritten atomically
 * on every change), one file per secret, and the log directories. jansson is
 * used here only to read and write functions.json; the deployment itself stays
 * JSON text that api.c owns the meaning of. */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jansson.h>
#include "cmn/duration.h"

#define STATE_FILE "functions.json"
#define PATH_BYTES 4096

struct pv_store {
    char *dir;
    struct pv_fn_rec *fns;
    size_t count, cap;
};

static int mkdir_p(const char *path, mode_t mode)
{
    char tmp[PATH_BYTES];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, mode) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Writes `len` bytes to `path` through "<path>.tmp": write, fsync, rename, so
 * a crash leaves either the old or the new file, never half of one. */
static enum cmn_status write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                                    struct cmn_err *err)
{
    char tmp[PATH_BYTES];
    enum cmn_status st = CMN_OK;
    int fd = -1;
    /* ".<name>.tmp": a name no secret can have (listing skips it). */
    const char *base = strrchr(path, '/');
    base = base != NULL ? base + 1 : path;
    if (snprintf(tmp, sizeof tmp, "%.*s.%s.tmp", (int)(base - path), path, base) >= (int)sizeof tmp)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "path too long: %s", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        st = cmn_err_set(err, CMN_ERR_IO, errno, "open %s: %s", tmp, strerror(errno));
        goto out;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            st = cmn_err_set(err, CMN_ERR_IO, errno, "write %s: %s", tmp, strerror(errno));
            goto out;
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) != 0) {
        st = cmn_err_set(err, CMN_ERR_IO, errno, "fsync %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        st = cmn_err_set(err, CMN_ERR_IO, errno, "close %s: %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        st = cmn_err_set(err, CMN_ERR_IO, errno, "rename %s: %s", tmp, strerror(errno));
        goto out;
    }
out:
    if (fd >= 0)
        close(fd);
    if (st != CMN_OK)
        (void)unlink(tmp);
    return st;
}

static void rec_clear(struct pv_fn_rec *r)
{
    free(r->deployment);
    r->deployment = NULL;
}

static enum cmn_status save(struct pv_store *s, struct cmn_err *err)
{
    enum cmn_status st = CMN_OK;
    char path[PATH_BYTES];
    char *text = NULL;
    json_t *arr = json_array();
    json_t *root = json_pack("{s:i,s:o}", "version", 1, "functions", arr);
    if (root == NULL) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < s->count; i++) {
        const struct pv_fn_rec *r = &s->fns[i];
        char created[40];
        cmn_time_format(r->created_ms, created, sizeof created);
        json_t *dep = json_loads(r->deployment, 0, NULL);
        json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:o}", "name", r->name, "namespace", r->ns,
                              "replicas", (json_int_t)r->replicas, "createdAt", created,
                              "deployment", dep != NULL ? dep : json_object());
        if (o == NULL || json_array_append_new(arr, o) != 0) {
            st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
            goto out;
        }
    }
    text = json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS);
    if (text == NULL) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
        goto out;
    }
    snprintf(path, sizeof path, "%s/%s", s->dir, STATE_FILE);
    st = write_atomic(path, text, strlen(text), 0600, err);
out:
    free(text);
    json_decref(root);
    return st;
}

static struct pv_fn_rec *find(const struct pv_store *s, const char *name, const char *ns)
{
    for (size_t i = 0; i < s->count; i++)
        if (strcmp(s->fns[i].name, name) == 0 && strcmp(s->fns[i].ns, ns) == 0)
            return &s->fns[i];
    return NULL;
}

static enum cmn_status add(struct pv_store *s, const char *name, const char *ns,
                           const char *deployment, int64_t replicas, int64_t created_ms,
                           struct cmn_err *err)
{
    if (strlen(name) >= CMN_NAME_MAX || strlen(ns) >= CMN_NAME_MAX)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "name too long");
    char *copy = strdup(deployment);
    if (copy == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
    struct pv_fn_rec *r = find(s, name, ns);
    if (r == NULL) {
        if (s->count == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 8;
            struct pv_fn_rec *fns = realloc(s->fns, cap * sizeof *fns);
            if (fns == NULL) {
                free(copy);
                return cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
            }
            s->fns = fns;
            s->cap = cap;
        }
        r = &s->fns[s->count++];
        memset(r, 0, sizeof *r);
        snprintf(r->name, sizeof r->name, "%s", name);
        snprintf(r->ns, sizeof r->ns, "%s", ns);
    }
    rec_clear(r);
    r->deployment = copy;
    r->replicas = replicas;
    r->created_ms = created_ms;
    return CMN_OK;
}

static enum cmn_status load(struct pv_store *s, struct cmn_err *err)
{
    char path[PATH_BYTES];
    json_error_t jerr;
    enum cmn_status st = CMN_OK;
    snprintf(path, sizeof path, "%s/%s", s->dir, STATE_FILE);
    if (access(path, F_OK) != 0)
        return errno == ENOENT
                   ? CMN_OK
                   : cmn_err_set(err, CMN_ERR_IO, errno, "%s: %s", path, strerror(errno));
    json_t *root = json_load_file(path, 0, &jerr);
    if (root == NULL)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "%s:%d: %s", path, jerr.line, jerr.text);
    json_t *arr = json_object_get(root, "functions");
    if (!json_is_array(arr)) {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "%s: no \"functions\" array", path);
        goto out;
    }
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        const char *name = json_string_value(json_object_get(o, "name"));
        const char *ns = json_string_value(json_object_get(o, "namespace"));
        const char *created = json_string_value(json_object_get(o, "createdAt"));
        json_t *rep = json_object_get(o, "replicas");
        json_t *dep = json_object_get(o, "deployment");
        int64_t created_ms = 0;
        if (name == NULL || ns == NULL || !json_is_integer(rep) || !json_is_object(dep) ||
            created == NULL || !cmn_time_parse(created, &created_ms)) {
            st = cmn_err_set(err, CMN_ERR_INVALID, 0, "%s: functions[%zu] is malformed", path, i);
            goto out;
        }
        char *text = json_dumps(dep, JSON_COMPACT);
        if (text == NULL) {
            st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
            goto out;
        }
        st = add(s, name, ns, text, json_integer_value(rep), created_ms, err);
        free(text);
        if (st != CMN_OK)
            goto out;
    }
out:
    json_decref(root);
    return st;
}

enum cmn_status pv_store_open(const char *dir, struct pv_store **out, struct cmn_err *err)
{
    enum cmn_status st = CMN_OK;
    char path[PATH_BYTES];
    struct pv_store *s = calloc(1, sizeof *s);
    if (s == NULL || (s->dir = strdup(dir)) == NULL) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
        goto out;
    }
    const char *subs[] = {"", "/secrets", "/logs"};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        if (snprintf(path, sizeof path, "%s%s", dir, subs[i]) >= (int)sizeof path) {
            st = cmn_err_set(err, CMN_ERR_INVALID, 0, "provider_state_dir too long");
            goto out;
        }
        if (mkdir_p(path, i == 1 ? 0700 : 0755) != 0) {
            st = cmn_err_set(err, CMN_ERR_IO, errno, "mkdir %s: %s", path, strerror(errno));
            goto out;
        }
    }
    st = load(s, err);
    if (st != CMN_OK)
        goto out;
    *out = s;
    s = NULL;
out:
    pv_store_free(s);
    return st;
}

void pv_store_free(struct pv_store *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->count; i++)
        rec_clear(&s->fns[i]);
    free(s->fns);
    free(s->dir);
    free(s);
}

size_t pv_store_count(const struct pv_store *s)
{
    return s->count;
}

const struct pv_fn_rec *pv_store_at(const struct pv_store *s, size_t i)
{
    return i < s->count ? &s->fns[i] : NULL;
}

const struct pv_fn_rec *pv_store_find(const struct pv_store *s, const char *name, const char *ns)
{
    return find(s, name, ns);
}

enum cmn_status pv_store_put(struct pv_store *s, const char *name, const char *ns,
                             const char *deployment, int64_t replicas, int64_t created_ms,
                             struct cmn_err *err)
{
    enum cmn_status st = add(s, name, ns, deployment, replicas, created_ms, err);
    return st == CMN_OK ? save(s, err) : st;
}

enum cmn_status pv_store_set_replicas(struct pv_store *s, const char *name, const char *ns,
                                      int64_t replicas, struct cmn_err *err)
{
    struct pv_fn_rec *r = find(s, name, ns);
    if (r == NULL)
        return cmn_err_set(err, CMN_ERR_NOT_FOUND, 0, "function %s.%s not found", name, ns);
    r->replicas = replicas;
    return save(s, err);
}

enum cmn_status pv_store_remove(struct pv_store *s, const char *name, const char *ns,
                                struct cmn_err *err)
{
    struct pv_fn_rec *r = find(s, name, ns);
    if (r == NULL)
        return cmn_err_set(err, CMN_ERR_NOT_FOUND, 0, "function %s.%s not found", name, ns);
    rec_clear(r);
    size_t i = (size_t)(r - s->fns);
    memmove(&s->fns[i], &s->fns[i + 1], (s->count - i - 1) * sizeof *r);
    s->count--;
    return save(s, err);
}

const char *pv_store_dir(const struct pv_store *s)
{
    return s->dir;
}

enum cmn_status pv_store_log_dir(const struct pv_store *s, const char *ns, char *buf, size_t size,
                                 struct cmn_err *err)
{
    if (snprintf(buf, size, "%s/logs/%s", s->dir, ns) >= (int)size)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "log path too long");
    if (mkdir_p(buf, 0755) != 0)
        return cmn_err_set(err, CMN_ERR_IO, errno, "mkdir %s: %s", buf, strerror(errno));
    return CMN_OK;
}

enum cmn_status pv_store_log_path(const struct pv_store *s, const char *name, const char *ns,
                                  char *buf, size_t size, struct cmn_err *err)
{
    if (snprintf(buf, size, "%s/logs/%s/%s.log", s->dir, ns, name) >= (int)size)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "log path too long");
    return CMN_OK;
}

enum cmn_status pv_store_secret_dir(const struct pv_store *s, const char *ns, char *buf,
                                    size_t size, struct cmn_err *err)
{
    if (snprintf(buf, size, "%s/secrets/%s", s->dir, ns) >= (int)size)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "secret path too long");
    return CMN_OK;
}

static bool alnum_lower(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool pv_store_secret_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len >= PV_SECRET_NAME_MAX)
        return false;
    if (!alnum_lower(name[0]) || !alnum_lower(name[len - 1]))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!alnum_lower(c) && c != '-' && c != '.')
            return false;
        if (c == '.' && name[i + 1] == '.')
            return false;
    }
    return true;
}

static enum cmn_status secret_path(const struct pv_store *s, const char *name, const char *ns,
                                   char *buf, size_t size, struct cmn_err *err)
{
    if (!pv_store_secret_name_valid(name))
        return cmn_err_set(err, CMN_ERR_INVALID, 0,
                           "invalid secret name \"%s\": must be a DNS-1123 subdomain", name);
    if (snprintf(buf, size, "%s/secrets/%s/%s", s->dir, ns, name) >= (int)size)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "secret path too long");
    return CMN_OK;
}

bool pv_store_secret_exists(const struct pv_store *s, const char *name, const char *ns)
{
    char path[PATH_BYTES];
    struct stat st;
    return secret_path(s, name, ns, path, sizeof path, NULL) == CMN_OK && stat(path, &st) == 0 &&
           S_ISREG(st.st_mode);
}

enum cmn_status pv_store_secret_write(struct pv_store *s, const char *name, const char *ns,
                                      const void *value, size_t len, enum pv_secret_mode mode,
                                      struct cmn_err *err)
{
    char path[PATH_BYTES], dir[PATH_BYTES];
    enum cmn_status st = secret_path(s, name, ns, path, sizeof path, err);
    if (st != CMN_OK)
        return st;
    bool exists = pv_store_secret_exists(s, name, ns);
    if (mode == PV_SECRET_CREATE && exists)
        return cmn_err_set(err, CMN_ERR_CONFLICT, 0, "secret %s already exists", name);
    if (mode == PV_SECRET_UPDATE && !exists)
        return cmn_err_set(err, CMN_ERR_NOT_FOUND, 0, "unable to find secret: %s", name);
    st = pv_store_secret_dir(s, ns, dir, sizeof dir, err);
    if (st != CMN_OK)
        return st;
    if (mkdir_p(dir, 0700) != 0)
        return cmn_err_set(err, CMN_ERR_IO, errno, "mkdir %s: %s", dir, strerror(errno));
    return write_atomic(path, value, len, 0600, err);
}

enum cmn_status pv_store_secret_delete(struct pv_store *s, const char *name, const char *ns,
                                       struct cmn_err *err)
{
    char path[PATH_BYTES];
    enum cmn_status st = secret_path(s, name, ns, path, sizeof path, err);
    if (st != CMN_OK)
        return st;
    if (!pv_store_secret_exists(s, name, ns))
        return cmn_err_set(err, CMN_ERR_NOT_FOUND, 0, "unable to find secret: %s", name);
    if (unlink(path) != 0)
        return cmn_err_set(err, CMN_ERR_IO, errno, "unlink %s: %s", path, strerror(errno));
    return CMN_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

enum cmn_status pv_store_secret_list(const struct pv_store *s, const char *ns, char ***names,
                                     size_t *count, struct cmn_err *err)
{
    char dir[PATH_BYTES];
    enum cmn_status st = pv_store_secret_dir(s, ns, dir, sizeof dir, err);
    char **list = NULL;
    size_t n = 0, cap = 0;
    DIR *d = NULL;
    if (st != CMN_OK)
        return st;
    d = opendir(dir);
    if (d == NULL) {
        if (errno != ENOENT)
            return cmn_err_set(err, CMN_ERR_IO, errno, "opendir %s: %s", dir, strerror(errno));
        *names = NULL;
        *count = 0;
        return CMN_OK;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        /* Skips ".", "..", and the ".<name>.tmp" files of an interrupted write. */
        if (!pv_store_secret_name_valid(e->d_name) || !pv_store_secret_exists(s, e->d_name, ns))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(list, cap * sizeof *grown);
            if (grown == NULL) {
                st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
                goto out;
            }
            list = grown;
        }
        if ((list[n] = strdup(e->d_name)) == NULL) {
            st = cmn_err_set(err, CMN_ERR_NOMEM, ENOMEM, "out of memory");
            goto out;
        }
        n++;
    }
    if (n > 0)
        qsort(list, n, sizeof *list, cmp_str);
    *names = list;
    *count = n;
    list = NULL;
    n = 0;
out:
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
    closedir(d);
    return st;
}
