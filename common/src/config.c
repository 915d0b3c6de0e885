/* The declarative configuration engine: reads each table entry from the
 * environment (the only getenv() in the project), parses and range-checks it,
 * stores it at the entry's offset, and renders the same table as --help,
 * markdown (docs/configuration.md) and the start-up log line. */
#include "cmn/config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cmn/duration.h"
#include "cmn/log.h"

static const char *const type_names[] = {
    [CMN_CFG_STRING] = "string",     [CMN_CFG_INT] = "integer",       [CMN_CFG_BOOL] = "bool",
    [CMN_CFG_DURATION] = "duration", [CMN_CFG_CODES] = "status list",
};

static enum cmn_status parse_bool(const char *v, bool *out)
{
    if (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes") ||
        !strcasecmp(v, "on")) {
        *out = true;
        return CMN_OK;
    }
    if (!strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "no") ||
        !strcasecmp(v, "off")) {
        *out = false;
        return CMN_OK;
    }
    return CMN_ERR_INVALID;
}

enum cmn_status cmn_config_codes_parse(const char *v, struct cmn_config_codes *out, char *why,
                                       size_t why_size)
{
    struct cmn_config_codes codes;
    memset(&codes, 0, sizeof(codes));
    const char *p = v;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        char *end = NULL;
        errno = 0;
        long code = strtol(p, &end, 10);
        if (end == p || errno != 0 || code < 100 || code > 599) {
            snprintf(why, why_size, "\"%s\" is not a list of HTTP statuses 100..599", v);
            return CMN_ERR_INVALID;
        }
        codes.has[code] = true;
        p = end;
        while (*p == ' ')
            p++;
        if (*p != ',' && *p != '\0') {
            snprintf(why, why_size, "\"%s\" is not a comma-separated list", v);
            return CMN_ERR_INVALID;
        }
    }
    *out = codes;
    return CMN_OK;
}

static enum cmn_status load_one(const struct cmn_config_entry *e, const char *value, void *config,
                                struct cmn_err *err)
{
    char *field = (char *)config + e->offset;
    char why[200] = "";
    switch (e->type) {
    case CMN_CFG_STRING: {
        char *copy = NULL;
        if (value != NULL) {
            copy = strdup(value);
            if (copy == NULL)
                return cmn_err_set(err, CMN_ERR_NOMEM, 0, "%s: out of memory", e->name);
        }
        char **slot = (char **)(void *)field;
        free(*slot);
        *slot = copy;
        return CMN_OK;
    }
    case CMN_CFG_INT: {
        if (value == NULL) {
            *(int64_t *)(void *)field = 0;
            return CMN_OK;
        }
        char *end = NULL;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (end == value || *end != '\0' || errno != 0)
            return cmn_err_set(err, CMN_ERR_INVALID, 0, "%s: \"%s\" is not an integer", e->name,
                               value);
        if (e->min <= e->max && (v < e->min || v > e->max))
            return cmn_err_set(err, CMN_ERR_INVALID, 0, "%s: %lld is outside %" PRId64 "..%" PRId64,
                               e->name, v, e->min, e->max);
        *(int64_t *)(void *)field = v;
        return CMN_OK;
    }
    case CMN_CFG_BOOL: {
        bool b = false;
        if (value != NULL && parse_bool(value, &b) != CMN_OK)
            return cmn_err_set(err, CMN_ERR_INVALID, 0, "%s: \"%s\" is not true or false", e->name,
                               value);
        *(bool *)(void *)field = b;
        return CMN_OK;
    }
    case CMN_CFG_DURATION: {
        int64_t ms = 0;
        if (value != NULL) {
            struct cmn_err derr;
            if (cmn_duration_parse_ms(value, &ms, &derr) != CMN_OK)
                return cmn_err_set(err, CMN_ERR_INVALID, 0, "%s: %s", e->name, derr.msg);
        }
        if (e->min <= e->max && (ms < e->min || ms > e->max)) {
            char a[32], b[32];
            return cmn_err_set(err, CMN_ERR_INVALID, 0, "%s: \"%s\" is outside %s..%s", e->name,
                               value ? value : "", cmn_duration_format(e->min, a, sizeof(a)),
                               cmn_duration_format(e->max, b, sizeof(b)));
        }
        *(int64_t *)(void *)field = ms;
        return CMN_OK;
    }
    case CMN_CFG_CODES: {
        struct cmn_config_codes *codes = (struct cmn_config_codes *)(void *)field;
        if (value == NULL) {
            memset(codes, 0, sizeof(*codes));
            return CMN_OK;
        }
        if (cmn_config_codes_parse(value, codes, why, sizeof(why)) != CMN_OK)
            return cmn_err_set(err, CMN_ERR_INVALID, 0, "%s: %s", e->name, why);
        return CMN_OK;
    }
    }
    return cmn_err_set(err, CMN_ERR_INVALID, 0, "%s: unknown type", e->name);
}

enum cmn_status cmn_config_load(const struct cmn_config_entry *table, size_t count, void *config,
                                struct cmn_err *err)
{
    for (size_t i = 0; i < count; i++) {
        const struct cmn_config_entry *e = &table[i];
        const char *value = getenv(e->name);
        if (value == NULL || value[0] == '\0')
            value = e->default_value;
        enum cmn_status st = load_one(e, value, config, err);
        if (st != CMN_OK)
            return st;
    }
    return CMN_OK;
}

void cmn_config_free(const struct cmn_config_entry *table, size_t count, void *config)
{
    for (size_t i = 0; i < count; i++) {
        if (table[i].type != CMN_CFG_STRING)
            continue;
        char **slot = (char **)(void *)((char *)config + table[i].offset);
        free(*slot);
        *slot = NULL;
    }
}

static void format_value(const struct cmn_config_entry *e, const void *config, char *buf,
                         size_t size)
{
    const char *field = (const char *)config + e->offset;
    if (e->secret) {
        snprintf(buf, size, "<redacted>");
        return;
    }
    switch (e->type) {
    case CMN_CFG_STRING: {
        const char *s = *(char *const *)(const void *)field;
        snprintf(buf, size, "%s", s ? s : "");
        return;
    }
    case CMN_CFG_INT:
        snprintf(buf, size, "%" PRId64, *(const int64_t *)(const void *)field);
        return;
    case CMN_CFG_BOOL:
        snprintf(buf, size, "%s", *(const bool *)(const void *)field ? "true" : "false");
        return;
    case CMN_CFG_DURATION:
        cmn_duration_format(*(const int64_t *)(const void *)field, buf, size);
        return;
    case CMN_CFG_CODES: {
        const struct cmn_config_codes *codes = (const struct cmn_config_codes *)(const void *)field;
        size_t off = 0;
        buf[0] = '\0';
        for (int c = 100; c < 600 && off + 5 < size; c++)
            if (codes->has[c])
                off += (size_t)snprintf(buf + off, size - off, "%s%d", off ? "," : "", c);
        return;
    }
    }
    buf[0] = '\0';
}

void cmn_config_log(const char *program, const struct cmn_config_entry *table, size_t count,
                    const void *config)
{
    char line[1800];
    size_t off = 0;
    line[0] = '\0';
    for (size_t i = 0; i < count && off < sizeof(line); i++) {
        char value[256];
        format_value(&table[i], config, value, sizeof(value));
        int n = snprintf(line + off, sizeof(line) - off, "%s%s=%s", off ? " " : "", table[i].name,
                         value);
        if (n < 0)
            break;
        off += (size_t)n;
    }
    /* Always printed, whatever log_level says (DESIGN §7). */
    cmn_log_write(CMN_LOG_INFO, NULL, "%s config: %s", program, line);
}

void cmn_config_print_help(FILE *out, const char *program, const struct cmn_config_entry *table,
                           size_t count, bool markdown)
{
    if (markdown) {
        fprintf(out, "| variable | type | default | range | meaning |\n|---|---|---|---|---|\n");
    } else {
        fprintf(out,
                "%s %s: configured only through environment variables.\n"
                "Durations: seconds (\"60\") or Go style (\"1m05s\", \"500ms\").\n\n",
                program, CFAAS_VERSION);
    }
    for (size_t i = 0; i < count; i++) {
        const struct cmn_config_entry *e = &table[i];
        char range[80] = "";
        if (e->min <= e->max) {
            if (e->type == CMN_CFG_DURATION) {
                char a[32], b[32];
                snprintf(range, sizeof(range), "%s..%s", cmn_duration_format(e->min, a, sizeof(a)),
                         cmn_duration_format(e->max, b, sizeof(b)));
            } else if (e->type == CMN_CFG_INT) {
                snprintf(range, sizeof(range), "%" PRId64 "..%" PRId64, e->min, e->max);
            }
        }
        const char *def = e->default_value ? e->default_value : "";
        if (markdown)
            fprintf(out, "| `%s` | %s | `%s` | %s | %s |\n", e->name, type_names[e->type], def,
                    range, e->help);
        else
            fprintf(out, "%-26s %-11s default=%-26s %s%s%s\n", e->name, type_names[e->type],
                    def[0] ? def : "(unset)", e->help, range[0] ? " Range " : "", range);
    }
}

int cmn_config_handle_args(int argc, char **argv, const char *program,
                           const struct cmn_config_entry *table, size_t count)
{
    if (argc < 2)
        return -1;
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        cmn_config_print_help(stdout, program, table, count, false);
        return 0;
    }
    if (!strcmp(argv[1], "--help-markdown")) {
        cmn_config_print_help(stdout, program, table, count, true);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("%s %s\n", program, CFAAS_VERSION);
        return 0;
    }
    fprintf(stderr, "%s: unknown argument \"%s\" (configuration is by environment; see --help)\n",
            program, argv[1]);
    return 2;
}

int cmn_config_load_or_exit_code(const char *program, const struct cmn_config_entry *table,
                                 size_t count, void *config)
{
    struct cmn_err err;
    if (cmn_config_load(table, count, config, &err) != CMN_OK) {
        fprintf(stderr, "%s: invalid configuration: %s\n", program, err.msg);
        return 2;
    }
    cmn_config_log(program, table, count, config);
    return -1;
}
