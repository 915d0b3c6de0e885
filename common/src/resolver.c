/* Function resolver (DESIGN.md §5). Owns the table of functions loaded from
 * functions.json (static mode) behind a read-write lock, or the URL pattern of
 * DNS mode, and renders OpenFaaS FunctionStatus JSON. jansson stays inside this
 * file: callers only see URLs and JSON text. */
#include "cmn/resolver.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Namespace given to functions.json entries that carry none: the OpenFaaS
 * default (function_namespace). */
#define DEFAULT_NS "openfaas-fn"
/* A functions.json larger than this is a mistake, not a catalogue. */
#define MAX_FILE_BYTES (16L * 1024 * 1024)
#define MAX_URL_BYTES 2048
#define MAX_SUFFIX_BYTES 253

struct fn_entry {
    char name[CMN_NAME_MAX];
    char ns[CMN_NAME_MAX];
    char *url;           /* no trailing '/' */
    json_t *annotations; /* object of strings, owned */
    json_t *labels;      /* object of strings, owned */
    struct cmn_fn_policy policy;
};

struct fn_table {
    struct fn_entry *items; /* sorted by (ns, name) */
    size_t count;
};

/* One function_queues pair: `ns` "" matches any namespace. */
struct queue_map {
    char name[CMN_NAME_MAX];
    char ns[CMN_NAME_MAX];
    char queue[CMN_QUEUE_MAX];
};

struct cmn_resolver {
    enum cmn_resolver_mode mode;
    char *file;         /* static mode */
    char *suffix;       /* DNS mode, without a leading '.', may be "" */
    char *provider_url; /* provider mode, without a trailing '/' */
    bool catalog;       /* provider mode: only cached functions resolve */
    bool http_only;
    struct queue_map *qmap;
    size_t qmap_count;
    cmn_policy_warn warn;
    void *warn_arg;
    char *dlq;               /* no queue may take this name; may be NULL */
    const char *reserved[2]; /* {dlq, NULL} for cmn_queue_name_reserved */
    pthread_rwlock_t lock;
    bool lock_ready;
    struct fn_table *table; /* static mode; swapped under the write lock */
};

static void table_free(struct fn_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->count; i++) {
        free(t->items[i].url);
        json_decref(t->items[i].annotations);
        json_decref(t->items[i].labels);
    }
    free(t->items);
    free(t);
}

static int entry_cmp(const void *a, const void *b)
{
    const struct fn_entry *x = a;
    const struct fn_entry *y = b;
    int c = strcmp(x->ns, y->ns);
    return c != 0 ? c : strcmp(x->name, y->name);
}

static enum cmn_status io_error(struct cmn_err *err, const char *path, int e)
{
    char why[128] = "";
    /* strerror_r (XSI form), not strerror: reload may run on any thread */
    if (strerror_r(e, why, sizeof why) != 0)
        snprintf(why, sizeof why, "errno %d", e);
    return cmn_err_set(err, CMN_ERR_IO, e, "functions_file %s: %s", path, why);
}

/* Reads the whole file so that an open/read failure keeps its errno (jansson's
 * json_load_file would hide it behind a text message). */
static enum cmn_status read_file(const char *path, char **out, size_t *out_len, struct cmn_err *err)
{
    enum cmn_status st = CMN_OK;
    FILE *f = NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;

    f = fopen(path, "rb");
    if (f == NULL) {
        st = io_error(err, path, errno);
        goto out;
    }
    for (;;) {
        if (len == cap) {
            size_t ncap = cap == 0 ? 4096 : cap * 2;
            if (ncap > (size_t)MAX_FILE_BYTES + 1)
                ncap = (size_t)MAX_FILE_BYTES + 1;
            if (ncap == cap) {
                st = cmn_err_set(err, CMN_ERR_TOO_LARGE, 0,
                                 "functions_file %s: larger than %ld bytes", path, MAX_FILE_BYTES);
                goto out;
            }
            char *nbuf = realloc(buf, ncap);
            if (nbuf == NULL) {
                st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "functions_file %s: out of memory", path);
                goto out;
            }
            buf = nbuf;
            cap = ncap;
        }
        errno = 0;
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                st = io_error(err, path, errno != 0 ? errno : EIO);
                goto out;
            }
            break;
        }
    }
    *out = buf;
    *out_len = len;
    buf = NULL;
out:
    free(buf);
    if (f != NULL)
        fclose(f);
    return st;
}

/* Accepts an absent/null member (→ empty object) or an object of strings. */
static enum cmn_status string_map(json_t *fn, const char *key, size_t index, json_t **out,
                                  struct cmn_err *err)
{
    json_t *v = json_object_get(fn, key);
    const char *k;
    json_t *item;

    if (v == NULL || json_is_null(v)) {
        *out = json_object();
        if (*out == NULL)
            return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
        return CMN_OK;
    }
    if (!json_is_object(v))
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "functions[%zu].%s: not an object", index, key);
    json_object_foreach(v, k, item)
    {
        if (!json_is_string(item))
            return cmn_err_set(err, CMN_ERR_INVALID, 0, "functions[%zu].%s.%s: not a string", index,
                               key, k);
    }
    *out = json_deep_copy(v);
    if (*out == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    return CMN_OK;
}

static bool url_valid(const char *url)
{
    const char *host;
    if (strncmp(url, "http://", 7) == 0)
        host = url + 7;
    else if (strncmp(url, "https://", 8) == 0)
        host = url + 8;
    else
        return false;
    if (*host == '\0' || *host == '/')
        return false;
    for (const char *p = url; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

static const char *json_annotation(void *arg, const char *key)
{
    return json_string_value(json_object_get(arg, key));
}

/* The entry's policy: its annotations, then the function_queues mapping for
 * a function without a queue annotation. */
static void entry_policy(const struct cmn_resolver *r, struct fn_entry *e)
{
    char full[CMN_NAME_MAX * 2];
    snprintf(full, sizeof(full), "%s.%s", e->name, e->ns);
    cmn_fn_policy_from_annotations(&e->policy, full, json_annotation, e->annotations,
                                   r != NULL ? r->reserved : NULL, r != NULL ? r->warn : NULL,
                                   r != NULL ? r->warn_arg : NULL);
}

static const char *mapped_queue(const struct cmn_resolver *r, const char *name, const char *ns)
{
    for (size_t i = 0; i < r->qmap_count; i++) {
        const struct queue_map *m = &r->qmap[i];
        if (strcmp(m->name, name) == 0 && (m->ns[0] == '\0' || strcmp(m->ns, ns) == 0))
            return m->queue;
    }
    return NULL;
}

static enum cmn_status parse_entry(json_t *fn, size_t index, bool http_only, struct fn_entry *e,
                                   struct cmn_err *err)
{
    json_t *jname, *jns, *jurl;
    const char *name, *ns, *url;
    size_t url_len;

    if (!json_is_object(fn))
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "functions[%zu]: not an object", index);

    jname = json_object_get(fn, "name");
    if (!json_is_string(jname))
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "functions[%zu].name: missing or not a string",
                           index);
    name = json_string_value(jname);
    if (!cmn_name_label_valid(name, strlen(name)))
        return cmn_err_set(err, CMN_ERR_INVALID, 0,
                           "functions[%zu].name \"%.64s\": not a valid name", index, name);

    jns = json_object_get(fn, "namespace");
    if (jns == NULL || json_is_null(jns) || (json_is_string(jns) && json_string_length(jns) == 0)) {
        ns = DEFAULT_NS;
    } else if (json_is_string(jns)) {
        ns = json_string_value(jns);
        if (!cmn_name_label_valid(ns, strlen(ns)))
            return cmn_err_set(err, CMN_ERR_INVALID, 0,
                               "functions[%zu].namespace \"%.64s\": not a valid namespace", index,
                               ns);
    } else {
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "functions[%zu].namespace: not a string",
                           index);
    }

    jurl = json_object_get(fn, "url");
    if (!json_is_string(jurl))
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "functions[%zu].url: missing or not a string",
                           index);
    url = json_string_value(jurl);
    url_len = strlen(url);
    while (url_len > 0 && url[url_len - 1] == '/')
        url_len--;
    if (url_len == 0 || url_len >= MAX_URL_BYTES)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "functions[%zu].url: empty or too long", index);

    /* Name lengths were checked above (<= 63), so these copies cannot truncate. */
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->ns, sizeof e->ns, "%s", ns);
    e->url = malloc(url_len + 1);
    if (e->url == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    memcpy(e->url, url, url_len);
    e->url[url_len] = '\0';
    if (!url_valid(e->url))
        return cmn_err_set(err, CMN_ERR_INVALID, 0,
                           "functions[%zu].url \"%.200s\": not an http:// or https:// URL", index,
                           e->url);
    if (http_only && strncmp(e->url, "https://", 8) == 0)
        return cmn_err_set(err, CMN_ERR_INVALID, 0,
                           "functions[%zu].url \"%.200s\": https:// is not supported here (the "
                           "gateway calls functions over plain HTTP inside the cluster; use "
                           "http:// or put a TLS-terminating proxy in front of the function)",
                           index, e->url);

    enum cmn_status st = string_map(fn, "annotations", index, &e->annotations, err);
    if (st != CMN_OK)
        return st;
    return string_map(fn, "labels", index, &e->labels, err);
}

/* Provider mode: one FunctionStatus (faas-provider) into `e`. Labels and
 * annotations that are not objects of strings are taken as empty. */
static enum cmn_status parse_status(const struct cmn_resolver *r, json_t *fn,
                                    const char *default_ns, struct fn_entry *e, struct cmn_err *err)
{
    const char *name = json_string_value(json_object_get(fn, "name"));
    const char *ns = json_string_value(json_object_get(fn, "namespace"));
    if (ns == NULL || ns[0] == '\0')
        ns = default_ns != NULL && default_ns[0] != '\0' ? default_ns : DEFAULT_NS;
    if (name == NULL || !cmn_name_label_valid(name, strlen(name)) ||
        !cmn_name_label_valid(ns, strlen(ns)))
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "provider: function without a valid name");
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->ns, sizeof e->ns, "%s", ns);
    size_t n = strlen(r->provider_url) + strlen(name) + strlen(ns) + 16;
    e->url = malloc(n);
    if (e->url == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    snprintf(e->url, n, "%s/function/%s.%s", r->provider_url, name, ns);
    if (string_map(fn, "annotations", 0, &e->annotations, NULL) != CMN_OK)
        e->annotations = json_object();
    if (string_map(fn, "labels", 0, &e->labels, NULL) != CMN_OK)
        e->labels = json_object();
    if (e->annotations == NULL || e->labels == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    return CMN_OK;
}

/* Parses functions.json into a new, sorted table. */
static enum cmn_status load_table(const struct cmn_resolver *r, const char *path, bool http_only,
                                  struct fn_table **out, struct cmn_err *err)
{
    enum cmn_status st;
    char *text = NULL;
    size_t text_len = 0;
    json_t *root = NULL;
    json_error_t jerr;
    json_t *list;
    struct fn_table *t = NULL;

    st = read_file(path, &text, &text_len, err);
    if (st != CMN_OK)
        goto out;
    root = json_loadb(text, text_len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0, "functions_file %s: line %d column %d: %s", path,
                         jerr.line, jerr.column, jerr.text);
        goto out;
    }
    list = json_object_get(root, "functions");
    if (!json_is_array(list)) {
        st = cmn_err_set(err, CMN_ERR_INVALID, 0,
                         "functions_file %s: expected an object with a \"functions\" array", path);
        goto out;
    }
    t = calloc(1, sizeof *t);
    if (t == NULL) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
        goto out;
    }
    if (json_array_size(list) > 0) {
        t->items = calloc(json_array_size(list), sizeof *t->items);
        if (t->items == NULL) {
            st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
            goto out;
        }
    }
    for (size_t i = 0; i < json_array_size(list); i++) {
        /* count grows first so that table_free releases a half-parsed entry */
        t->count++;
        st = parse_entry(json_array_get(list, i), i, http_only, &t->items[i], err);
        if (st != CMN_OK) {
            if (err != NULL && st == CMN_ERR_INVALID) {
                char msg[sizeof err->msg];
                snprintf(msg, sizeof msg, "%s", err->msg);
                cmn_err_set(err, st, 0, "functions_file %s: %s", path, msg);
            }
            goto out;
        }
    }
    if (t->count > 1)
        qsort(t->items, t->count, sizeof *t->items, entry_cmp);
    for (size_t i = 1; i < t->count; i++) {
        if (entry_cmp(&t->items[i - 1], &t->items[i]) == 0) {
            st = cmn_err_set(err, CMN_ERR_INVALID, 0, "functions_file %s: duplicate function %s.%s",
                             path, t->items[i].name, t->items[i].ns);
            goto out;
        }
    }
    for (size_t i = 0; i < t->count; i++)
        entry_policy(r, &t->items[i]);
    *out = t;
    t = NULL;
    st = CMN_OK;
out:
    table_free(t);
    json_decref(root);
    free(text);
    return st;
}

static const struct fn_entry *table_find(const struct fn_table *t, const char *name, const char *ns)
{
    struct fn_entry key;
    if (t == NULL || t->count == 0)
        return NULL;
    if (snprintf(key.name, sizeof key.name, "%s", name) >= (int)sizeof key.name ||
        snprintf(key.ns, sizeof key.ns, "%s", ns) >= (int)sizeof key.ns)
        return NULL;
    return bsearch(&key, t->items, t->count, sizeof *t->items, entry_cmp);
}

static bool suffix_valid(const char *s)
{
    for (const char *p = s; *p != '\0'; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.'))
            return false;
    }
    return strlen(s) <= MAX_SUFFIX_BYTES;
}

/* "name[.ns]=queue,..." into r->qmap. */
static enum cmn_status parse_queue_map(struct cmn_resolver *r, const char *text,
                                       struct cmn_err *err)
{
    size_t cap = 1;
    for (const char *p = text; *p != '\0'; p++)
        cap += *p == ',';
    r->qmap = calloc(cap, sizeof(*r->qmap));
    if (r->qmap == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    const char *p = text;
    while (*p != '\0') {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        size_t len = strcspn(p, ",");
        char item[256];
        while (len > 0 && p[len - 1] == ' ')
            len--;
        if (len >= sizeof(item))
            return cmn_err_set(err, CMN_ERR_INVALID, 0, "function_queues: entry too long");
        memcpy(item, p, len);
        item[len] = '\0';
        p += strcspn(p, ",");
        char *eq = strchr(item, '=');
        struct queue_map *m = &r->qmap[r->qmap_count];
        struct cmn_fn_name fn;
        if (eq == NULL || !cmn_queue_name_valid(eq + 1, strlen(eq + 1)))
            return cmn_err_set(err, CMN_ERR_INVALID, 0,
                               "function_queues \"%.80s\": use name[.namespace]=queue, the queue "
                               "1 to 63 of A-Z a-z 0-9 - _",
                               item);
        const char *taken = cmn_queue_name_reserved(eq + 1, r->reserved);
        if (taken != NULL)
            return cmn_err_set(err, CMN_ERR_INVALID, 0,
                               "function_queues \"%.80s\": queue %s is reserved (%s)", item, eq + 1,
                               taken);
        *eq = '\0';
        bool has_ns = strchr(item, '.') != NULL;
        if (cmn_name_parse(item, strlen(item), "x", &fn, NULL) != CMN_OK)
            return cmn_err_set(err, CMN_ERR_INVALID, 0,
                               "function_queues: \"%.64s\" is not a function name", item);
        snprintf(m->name, sizeof(m->name), "%s", fn.name);
        snprintf(m->ns, sizeof(m->ns), "%s", has_ns ? fn.ns : "");
        snprintf(m->queue, sizeof(m->queue), "%s", eq + 1);
        r->qmap_count++;
    }
    return CMN_OK;
}

static bool provider_url_valid(const char *url)
{
    return strncmp(url, "http://", 7) == 0 && url_valid(url) && strlen(url) < MAX_URL_BYTES;
}

enum cmn_status cmn_resolver_new(const struct cmn_resolver_config *config,
                                 struct cmn_resolver **out, struct cmn_err *err)
{
    enum cmn_status st = CMN_OK;
    struct cmn_resolver *r = NULL;

    if (config == NULL || out == NULL)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "resolver: missing config");
    bool has_file = config->functions_file != NULL && config->functions_file[0] != '\0';
    bool has_provider = config->provider_url != NULL && config->provider_url[0] != '\0';
    int modes = (int)has_file + (int)config->direct_functions + (int)has_provider;
    if (modes > 1)
        return cmn_err_set(err, CMN_ERR_INVALID, 0,
                           "set one of functions_file, direct_functions=true or "
                           "functions_provider_url, not several");
    if (modes == 0)
        return cmn_err_set(err, CMN_ERR_INVALID, 0,
                           "no function resolver: set functions_file, direct_functions=true or "
                           "functions_provider_url");

    r = calloc(1, sizeof *r);
    if (r == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
    r->warn = config->warn;
    r->warn_arg = config->warn_arg;
    if (config->dead_letter_stream != NULL && config->dead_letter_stream[0] != '\0') {
        r->dlq = strdup(config->dead_letter_stream);
        if (r->dlq == NULL) {
            free(r);
            return cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
        }
    }
    r->reserved[0] = r->dlq;
    if (pthread_rwlock_init(&r->lock, NULL) != 0) {
        st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "resolver: cannot create lock");
        goto out;
    }
    r->lock_ready = true;
    if (config->function_queues != NULL && config->function_queues[0] != '\0') {
        st = parse_queue_map(r, config->function_queues, err);
        if (st != CMN_OK)
            goto out;
    }

    if (config->direct_functions) {
        const char *suffix = config->direct_suffix != NULL ? config->direct_suffix : "";
        while (*suffix == '.')
            suffix++;
        if (!suffix_valid(suffix)) {
            st = cmn_err_set(err, CMN_ERR_INVALID, 0,
                             "direct_functions_suffix \"%.64s\": not a DNS suffix", suffix);
            goto out;
        }
        r->mode = CMN_RESOLVER_DNS;
        r->suffix = strdup(suffix);
        if (r->suffix == NULL) {
            st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
            goto out;
        }
        /* A trailing '.' would produce "name.ns.:8080". */
        size_t n = strlen(r->suffix);
        while (n > 0 && r->suffix[n - 1] == '.')
            r->suffix[--n] = '\0';
    } else if (has_provider) {
        r->mode = CMN_RESOLVER_PROVIDER;
        r->catalog = config->provider_catalog;
        r->provider_url = strdup(config->provider_url);
        if (r->provider_url == NULL) {
            st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
            goto out;
        }
        size_t n = strlen(r->provider_url);
        while (n > 0 && r->provider_url[n - 1] == '/')
            r->provider_url[--n] = '\0';
        if (!provider_url_valid(r->provider_url)) {
            st = cmn_err_set(err, CMN_ERR_INVALID, 0,
                             "functions_provider_url \"%.200s\": not an http:// URL",
                             config->provider_url);
            goto out;
        }
        r->table = calloc(1, sizeof(*r->table));
        if (r->table == NULL) {
            st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
            goto out;
        }
    } else {
        r->mode = CMN_RESOLVER_STATIC;
        r->http_only = config->http_only;
        r->file = strdup(config->functions_file);
        if (r->file == NULL) {
            st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
            goto out;
        }
        st = load_table(r, r->file, r->http_only, &r->table, err);
        if (st != CMN_OK)
            goto out;
    }
    *out = r;
    r = NULL;
out:
    cmn_resolver_free(r);
    return st;
}

void cmn_resolver_free(struct cmn_resolver *r)
{
    if (r == NULL)
        return;
    table_free(r->table);
    free(r->file);
    free(r->suffix);
    free(r->provider_url);
    free(r->qmap);
    free(r->dlq);
    if (r->lock_ready)
        pthread_rwlock_destroy(&r->lock);
    free(r);
}

enum cmn_resolver_mode cmn_resolver_mode(const struct cmn_resolver *r)
{
    return r->mode;
}

/* DNS mode has nothing to re-read, so a SIGHUP there is a harmless no-op. */
enum cmn_status cmn_resolver_reload(struct cmn_resolver *r, struct cmn_err *err)
{
    struct fn_table *fresh = NULL;
    struct fn_table *old;
    enum cmn_status st;

    if (r == NULL)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "resolver: NULL");
    if (r->mode != CMN_RESOLVER_STATIC)
        return CMN_OK;
    /* Parse outside the lock: lookups continue on the old table meanwhile. */
    st = load_table(r, r->file, r->http_only, &fresh, err);
    if (st != CMN_OK)
        return st;
    pthread_rwlock_wrlock(&r->lock);
    old = r->table;
    r->table = fresh;
    pthread_rwlock_unlock(&r->lock);
    table_free(old);
    return CMN_OK;
}

enum cmn_status cmn_resolver_lookup(struct cmn_resolver *r, const struct cmn_fn_name *fn, char *url,
                                    size_t size, struct cmn_err *err)
{
    return cmn_resolver_lookup_policy(r, fn, url, size, NULL, err);
}

static enum cmn_status put_url(size_t size, int n, struct cmn_err *err)
{
    if (n < 0 || (size_t)n >= size)
        return cmn_err_set(err, CMN_ERR_TOO_LARGE, 0, "resolver: URL buffer too small");
    return CMN_OK;
}

enum cmn_status cmn_resolver_lookup_policy(struct cmn_resolver *r, const struct cmn_fn_name *fn,
                                           char *url, size_t size, struct cmn_fn_policy *policy,
                                           struct cmn_err *err)
{
    enum cmn_status st = CMN_OK;

    if (r == NULL || fn == NULL || url == NULL)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "resolver: NULL argument");
    if (!cmn_name_label_valid(fn->name, strnlen(fn->name, sizeof fn->name)) ||
        !cmn_name_label_valid(fn->ns, strnlen(fn->ns, sizeof fn->ns)))
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "resolver: invalid function name");
    if (policy != NULL)
        cmn_fn_policy_init(policy);

    if (r->mode == CMN_RESOLVER_DNS) {
        if (r->suffix[0] != '\0')
            st = put_url(size,
                         snprintf(url, size, "http://%s.%s.%s:8080", fn->name, fn->ns, r->suffix),
                         err);
        else
            st = put_url(size, snprintf(url, size, "http://%s.%s:8080", fn->name, fn->ns), err);
        const char *q = mapped_queue(r, fn->name, fn->ns);
        if (st == CMN_OK && policy != NULL && q != NULL)
            snprintf(policy->queue, sizeof(policy->queue), "%s", q);
        return st;
    }

    pthread_rwlock_rdlock(&r->lock);
    const struct fn_entry *e = table_find(r->table, fn->name, fn->ns);
    if (e == NULL) {
        if (r->mode == CMN_RESOLVER_PROVIDER && !r->catalog) {
            st = put_url(
                size, snprintf(url, size, "%s/function/%s.%s", r->provider_url, fn->name, fn->ns),
                err);
            goto out;
        }
        st = cmn_err_set(err, CMN_ERR_NOT_FOUND, 0, "function %s.%s not found", fn->name, fn->ns);
        goto out;
    }
    st = put_url(size, snprintf(url, size, "%s", e->url), err);
    if (st == CMN_OK && policy != NULL) {
        *policy = e->policy;
        const char *q = mapped_queue(r, fn->name, fn->ns);
        if (policy->queue[0] == '\0' && q != NULL)
            snprintf(policy->queue, sizeof(policy->queue), "%s", q);
    }
out:
    pthread_rwlock_unlock(&r->lock);
    return st;
}

/* One faas-provider FunctionStatus. The upstream URL is deliberately left out:
 * it is internal topology, not something /system/functions should reveal. */
static json_t *status_json(const struct fn_entry *e, cmn_count_fn count, void *count_arg)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    if (json_object_set_new(o, "name", json_string(e->name)) != 0 ||
        json_object_set_new(o, "image", json_string("")) != 0 ||
        json_object_set_new(o, "namespace", json_string(e->ns)) != 0 ||
        json_object_set_new(o, "envProcess", json_string("")) != 0 ||
        json_object_set_new(o, "labels", json_deep_copy(e->labels)) != 0 ||
        json_object_set_new(o, "annotations", json_deep_copy(e->annotations)) != 0 ||
        json_object_set_new(
            o, "invocationCount",
            json_integer(count != NULL ? (json_int_t)count(count_arg, e->name, e->ns) : 0)) != 0 ||
        json_object_set_new(o, "replicas", json_integer(1)) != 0 ||
        json_object_set_new(o, "availableReplicas", json_integer(1)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *cmn_resolver_list_json(struct cmn_resolver *r, const char *ns, cmn_count_fn count,
                             void *count_arg)
{
    json_t *arr = NULL;
    char *text = NULL;

    if (r == NULL)
        return NULL;
    arr = json_array();
    if (arr == NULL)
        return NULL;
    if (r->mode == CMN_RESOLVER_STATIC) {
        pthread_rwlock_rdlock(&r->lock);
        for (size_t i = 0; r->table != NULL && i < r->table->count; i++) {
            const struct fn_entry *e = &r->table->items[i];
            if (ns != NULL && strcmp(ns, e->ns) != 0)
                continue;
            if (json_array_append_new(arr, status_json(e, count, count_arg)) != 0) {
                pthread_rwlock_unlock(&r->lock);
                goto out;
            }
        }
        pthread_rwlock_unlock(&r->lock);
    }
    text = json_dumps(arr, JSON_COMPACT);
out:
    json_decref(arr);
    return text;
}

char *cmn_resolver_function_json(struct cmn_resolver *r, const struct cmn_fn_name *fn,
                                 cmn_count_fn count, void *count_arg)
{
    json_t *o = NULL;
    char *text = NULL;

    if (r == NULL || fn == NULL || r->mode != CMN_RESOLVER_STATIC)
        return NULL;
    pthread_rwlock_rdlock(&r->lock);
    const struct fn_entry *e = table_find(r->table, fn->name, fn->ns);
    if (e != NULL)
        o = status_json(e, count, count_arg);
    pthread_rwlock_unlock(&r->lock);
    if (o != NULL)
        text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/* ---- provider mode ------------------------------------------------------ */

/* Swaps in `fresh` (sorted here; duplicates keep the last) under the write
 * lock and frees the old table. */
static void table_swap(struct cmn_resolver *r, struct fn_table *fresh)
{
    if (fresh->count > 1)
        qsort(fresh->items, fresh->count, sizeof *fresh->items, entry_cmp);
    pthread_rwlock_wrlock(&r->lock);
    struct fn_table *old = r->table;
    r->table = fresh;
    pthread_rwlock_unlock(&r->lock);
    table_free(old);
}

static void entry_clear(struct fn_entry *e)
{
    free(e->url);
    json_decref(e->annotations);
    json_decref(e->labels);
    memset(e, 0, sizeof(*e));
}

static enum cmn_status copy_entry(const struct fn_entry *from, struct fn_entry *to)
{
    *to = *from;
    to->url = strdup(from->url);
    to->annotations = json_deep_copy(from->annotations);
    to->labels = json_deep_copy(from->labels);
    return to->url != NULL && to->annotations != NULL && to->labels != NULL ? CMN_OK
                                                                            : CMN_ERR_NOMEM;
}

enum cmn_status cmn_resolver_provider_put(struct cmn_resolver *r, const char *json, size_t len,
                                          const char *list_ns, const char *default_ns,
                                          struct cmn_err *err)
{
    if (r == NULL || r->mode != CMN_RESOLVER_PROVIDER)
        return cmn_err_set(err, CMN_ERR_INVALID, 0, "resolver: not in provider mode");
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    bool list = json_is_array(root);
    if (root == NULL || (!list && !json_is_object(root)) || (list && list_ns == NULL)) {
        json_decref(root);
        return cmn_err_set(err, CMN_ERR_INVALID, 0,
                           "provider: expected a FunctionStatus array or object");
    }
    size_t incoming = list ? json_array_size(root) : 1;
    enum cmn_status st = CMN_OK;
    struct fn_table *fresh = calloc(1, sizeof(*fresh));
    pthread_rwlock_rdlock(&r->lock);
    size_t have = r->table != NULL ? r->table->count : 0;
    if (fresh != NULL)
        fresh->items = calloc(have + incoming + 1, sizeof(*fresh->items));
    if (fresh == NULL || fresh->items == NULL) {
        pthread_rwlock_unlock(&r->lock);
        st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
        goto out;
    }
    /* the new answers first, then whatever of the old table they leave */
    for (size_t i = 0; i < incoming; i++) {
        json_t *item = list ? json_array_get(root, i) : root;
        struct fn_entry *e = &fresh->items[fresh->count];
        bool keep = json_is_object(item) && parse_status(r, item, default_ns, e, NULL) == CMN_OK &&
                    (!list || strcmp(e->ns, list_ns) == 0);
        for (size_t j = 0; j < fresh->count && keep; j++)
            keep = entry_cmp(&fresh->items[j], e) != 0;
        if (!keep) {
            entry_clear(e);
            continue;
        }
        fresh->count++;
    }
    size_t added = fresh->count;
    for (size_t i = 0; i < have; i++) {
        const struct fn_entry *old = &r->table->items[i];
        if (list && strcmp(old->ns, list_ns) == 0)
            continue; /* the namespace's list replaces it */
        bool replaced = false;
        for (size_t j = 0; j < added && !replaced; j++)
            replaced = entry_cmp(&fresh->items[j], old) == 0;
        if (replaced)
            continue;
        fresh->count++;
        if (copy_entry(old, &fresh->items[fresh->count - 1]) != CMN_OK) {
            pthread_rwlock_unlock(&r->lock);
            st = cmn_err_set(err, CMN_ERR_NOMEM, 0, "out of memory");
            goto out;
        }
    }
    pthread_rwlock_unlock(&r->lock);
    /* policies (and their warnings) only for the new answers */
    for (size_t i = 0; i < added; i++)
        entry_policy(r, &fresh->items[i]);
    table_swap(r, fresh);
    fresh = NULL;
out:
    table_free(fresh);
    json_decref(root);
    return st;
}

void cmn_resolver_provider_drop(struct cmn_resolver *r, const struct cmn_fn_name *fn)
{
    if (r == NULL || r->mode != CMN_RESOLVER_PROVIDER)
        return;
    pthread_rwlock_wrlock(&r->lock);
    struct fn_table *t = r->table;
    struct fn_entry *e = (struct fn_entry *)table_find(t, fn->name, fn->ns);
    if (e != NULL) {
        size_t at = (size_t)(e - t->items);
        entry_clear(e);
        memmove(e, e + 1, (t->count - at - 1) * sizeof(*e));
        t->count--;
    }
    pthread_rwlock_unlock(&r->lock);
}

static void enrich_one(json_t *o, const char *default_ns, cmn_count_fn count, void *count_arg)
{
    const char *name = json_string_value(json_object_get(o, "name"));
    const char *ns = json_string_value(json_object_get(o, "namespace"));
    if (ns == NULL || ns[0] == '\0')
        ns = default_ns != NULL && default_ns[0] != '\0' ? default_ns : DEFAULT_NS;
    if (name == NULL)
        return;
    double n = count != NULL ? count(count_arg, name, ns) : 0;
    json_object_set_new(o, "invocationCount", json_integer((json_int_t)n));
}

enum cmn_status cmn_status_json_enrich(const char *json, size_t len, const char *default_ns,
                                       cmn_count_fn count, void *count_arg, char **out)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (root == NULL || (!json_is_array(root) && !json_is_object(root))) {
        json_decref(root);
        return CMN_ERR_INVALID;
    }
    if (json_is_array(root)) {
        size_t i;
        json_t *v;
        json_array_foreach(root, i, v)
        {
            if (json_is_object(v))
                enrich_one(v, default_ns, count, count_arg);
        }
    } else {
        enrich_one(root, default_ns, count, count_arg);
    }
    *out = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return *out != NULL ? CMN_OK : CMN_ERR_NOMEM;
}

static size_t add_queue(char (*out)[CMN_QUEUE_MAX], size_t n, size_t max, const char *q)
{
    if (q == NULL || q[0] == '\0' || n >= max)
        return n;
    for (size_t i = 0; i < n; i++)
        if (strcmp(out[i], q) == 0)
            return n;
    snprintf(out[n], CMN_QUEUE_MAX, "%s", q);
    return n + 1;
}

size_t cmn_resolver_queues(struct cmn_resolver *r, char (*out)[CMN_QUEUE_MAX], size_t max)
{
    size_t n = 0;
    if (r == NULL)
        return 0;
    for (size_t i = 0; i < r->qmap_count; i++)
        n = add_queue(out, n, max, r->qmap[i].queue);
    pthread_rwlock_rdlock(&r->lock);
    for (size_t i = 0; r->table != NULL && i < r->table->count; i++)
        n = add_queue(out, n, max, r->table->items[i].policy.queue);
    pthread_rwlock_unlock(&r->lock);
    return n;
}
