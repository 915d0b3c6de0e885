/* Annotation → policy: each field on its own, so that one bad annotation
 * costs only itself. */
#include "cmn/fnpolicy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmn/config.h"
#include "cmn/duration.h"

void cmn_fn_policy_init(struct cmn_fn_policy *p)
{
    memset(p, 0, sizeof(*p));
    p->retry_attempts = -1;
    p->retry_min_wait_ms = -1;
    p->retry_max_wait_ms = -1;
}

bool cmn_fn_policy_set(const struct cmn_fn_policy *p)
{
    return p->queue[0] != '\0' || p->retry_attempts >= 0 || p->retry_min_wait_ms >= 0 ||
           p->retry_max_wait_ms >= 0 || p->retry_codes[0] != '\0';
}

bool cmn_queue_name_valid(const char *name, size_t len)
{
    if (len == 0 || len >= CMN_QUEUE_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

const char *cmn_queue_name_reserved(const char *name, const char *const *reserved)
{
    if (strncmp(name, "KV_", 3) == 0)
        return "KV_ names the streams of key-value buckets";
    if (strncmp(name, "OBJ_", 4) == 0)
        return "OBJ_ names the streams of object stores";
    for (size_t i = 0; reserved != NULL && reserved[i] != NULL; i++)
        if (reserved[i][0] != '\0' && strcmp(name, reserved[i]) == 0)
            return "the dead-letter stream's name";
    return NULL;
}

static void warn_bad(cmn_policy_warn warn, void *arg, const char *fn, const char *key,
                     const char *value, const char *rule)
{
    if (warn == NULL)
        return;
    char line[512];
    snprintf(line, sizeof(line),
             "function %s: annotation %s=\"%.80s\" ignored (%s); defaults apply", fn, key, value,
             rule);
    warn(arg, line);
}

static bool wait_of(const char *v, int64_t *out)
{
    int64_t ms = 0;
    if (cmn_duration_parse_ms(v, &ms, NULL) != CMN_OK || ms < 1 || ms > CMN_RETRY_WAIT_MAX_MS)
        return false;
    *out = ms;
    return true;
}

/* Writes the statuses of `set` in ascending order, comma-separated. */
static bool codes_text(const struct cmn_config_codes *set, char *out, size_t size)
{
    size_t n = 0;
    out[0] = '\0';
    for (int code = 100; code < 600; code++) {
        if (!set->has[code])
            continue;
        int w = snprintf(out + n, size - n, "%s%d", n > 0 ? "," : "", code);
        if (w < 0 || (size_t)w >= size - n)
            return false;
        n += (size_t)w;
    }
    return n > 0;
}

void cmn_fn_policy_from_annotations(struct cmn_fn_policy *p, const char *fn, cmn_annotation_get get,
                                    void *get_arg, const char *const *reserved,
                                    cmn_policy_warn warn, void *warn_arg)
{
    cmn_fn_policy_init(p);
    const char *v = get(get_arg, CMN_ANN_QUEUE);
    if (v != NULL) {
        const char *taken = NULL;
        if (!cmn_queue_name_valid(v, strlen(v)))
            warn_bad(warn, warn_arg, fn, CMN_ANN_QUEUE, v, "1 to 63 of A-Z a-z 0-9 - _");
        else if ((taken = cmn_queue_name_reserved(v, reserved)) != NULL)
            warn_bad(warn, warn_arg, fn, CMN_ANN_QUEUE, v, taken);
        else
            snprintf(p->queue, sizeof(p->queue), "%s", v);
    }
    v = get(get_arg, CMN_ANN_RETRY_ATTEMPTS);
    if (v != NULL) {
        char *end = NULL;
        errno = 0;
        long n = strtol(v, &end, 10);
        if (end != v && *end == '\0' && errno == 0 && n >= 0 && n <= CMN_RETRY_ATTEMPTS_MAX)
            p->retry_attempts = (int)n;
        else
            warn_bad(warn, warn_arg, fn, CMN_ANN_RETRY_ATTEMPTS, v, "an integer from 0 to 1000");
    }
    v = get(get_arg, CMN_ANN_RETRY_CODES);
    if (v != NULL) {
        struct cmn_config_codes set;
        char why[160];
        if (cmn_config_codes_parse(v, &set, why, sizeof(why)) != CMN_OK ||
            !codes_text(&set, p->retry_codes, sizeof(p->retry_codes))) {
            p->retry_codes[0] = '\0';
            warn_bad(warn, warn_arg, fn, CMN_ANN_RETRY_CODES, v,
                     "a comma-separated list of HTTP statuses 100..599");
        }
    }
    v = get(get_arg, CMN_ANN_RETRY_MIN_WAIT);
    if (v != NULL && !wait_of(v, &p->retry_min_wait_ms))
        warn_bad(warn, warn_arg, fn, CMN_ANN_RETRY_MIN_WAIT, v, "a duration from 1ms to 24h");
    v = get(get_arg, CMN_ANN_RETRY_MAX_WAIT);
    if (v != NULL && !wait_of(v, &p->retry_max_wait_ms))
        warn_bad(warn, warn_arg, fn, CMN_ANN_RETRY_MAX_WAIT, v, "a duration from 1ms to 24h");
    if (p->retry_min_wait_ms >= 0 && p->retry_max_wait_ms >= 0 &&
        p->retry_min_wait_ms > p->retry_max_wait_ms) {
        warn_bad(warn, warn_arg, fn, CMN_ANN_RETRY_MIN_WAIT, get(get_arg, CMN_ANN_RETRY_MIN_WAIT),
                 "above com.openfaas.retry.max_wait");
        p->retry_min_wait_ms = -1;
        p->retry_max_wait_ms = -1;
    }
}
