/* Declarative configuration: each program owns one static table of
 * struct cmn_config_entry describing every environment variable it reads
 * (name, type, default, range, offset into the program's config struct, help).
 * The same table drives parsing, validation, defaults, --help, the effective
 * config printed at start-up and docs/configuration.md (scripts/gen-config-doc.sh
 * runs each program with --help-markdown). getenv() appears only in config.c. */
#ifndef CMN_CONFIG_H
#define CMN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "cmn/status.h"

enum cmn_config_type {
    CMN_CFG_STRING,   /* char *, owned by the config struct (strdup'ed) */
    CMN_CFG_INT,      /* int64_t, checked against [min, max] */
    CMN_CFG_BOOL,     /* bool: "true"/"1"/"yes"/"on" or "false"/"0"/"no"/"off" */
    CMN_CFG_DURATION, /* int64_t milliseconds (cmn_duration_parse_ms), range in ms */
    CMN_CFG_CODES,    /* struct cmn_config_codes: comma list of HTTP statuses 100..599 */
};

/* A set of HTTP status codes (retry_http_codes). */
struct cmn_config_codes {
    bool has[600];
};

/* Parses a comma-separated list of HTTP statuses 100..599 (`v`, spaces
 * allowed) into `*out`. CMN_ERR_INVALID with a reason in `why` (`why_size`
 * bytes) otherwise; `*out` is only written on success. Pure, any thread. */
enum cmn_status cmn_config_codes_parse(const char *v, struct cmn_config_codes *out, char *why,
                                       size_t why_size);

struct cmn_config_entry {
    const char *name; /* environment variable name, lower_snake */
    enum cmn_config_type type;
    const char *default_value; /* textual default, parsed like an env value; NULL = unset */
    int64_t min, max;          /* range for INT and DURATION (ms); ignored if min > max */
    size_t offset;             /* offsetof(program config struct, field) */
    bool secret;               /* value redacted when printed */
    const char *help;          /* one line */
};

/* Loads every entry of `table` (`count` entries) into `config` (the program's
 * struct, fields at entry offsets), taking the environment value when set and
 * non-empty, else the default. On the first invalid value returns
 * CMN_ERR_INVALID with err->msg naming the variable and the reason; fields
 * loaded so far stay set (free them with cmn_config_free). `config` must start
 * zeroed (string fields NULL). Main thread, at start. */
enum cmn_status cmn_config_load(const struct cmn_config_entry *table, size_t count, void *config,
                                struct cmn_err *err);

/* Frees the strings that cmn_config_load stored in `config`. */
void cmn_config_free(const struct cmn_config_entry *table, size_t count, void *config);

/* Prints "name=value" pairs (secrets redacted) on one log line prefixed by
 * `program`, via the logger. */
void cmn_config_log(const char *program, const struct cmn_config_entry *table, size_t count,
                    const void *config);

/* Prints the table as help text (one line per variable: name, type, default,
 * help) to `out`; markdown table when `markdown` is true. */
void cmn_config_print_help(FILE *out, const char *program, const struct cmn_config_entry *table,
                           size_t count, bool markdown);

/* Handles the common command line of every program: no argument → returns -1
 * (continue); "--help" / "-h" → prints help, returns 0; "--help-markdown" →
 * markdown, returns 0; anything else → message on stderr, returns 2. The caller
 * exits with the returned code when it is >= 0. */
int cmn_config_handle_args(int argc, char **argv, const char *program,
                           const struct cmn_config_entry *table, size_t count);

/* Convenience: load, on error print "config: <msg>" to stderr and return 2;
 * on success log the effective config and return -1. */
int cmn_config_load_or_exit_code(const char *program, const struct cmn_config_entry *table,
                                 size_t count, void *config);

#endif
