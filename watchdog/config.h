/* watchdog configuration: the effective settings of one watchdog process, read
 * once from the environment at start-up through the declarative table
 * wd_config_table (config.c). Main thread only; read-only after loading. */
#ifndef WD_CONFIG_H
#define WD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "cmn/config.h"

/* Effective configuration. Strings are owned by the struct (free with
 * cmn_config_free(wd_config_table, wd_config_count, cfg)); durations in ms. */
struct wd_config {
    char *fprocess;           /* command run per request via /bin/sh -c; NULL = unset */
    char *bind_address;       /* listen address, default 0.0.0.0 */
    int64_t port;             /* listen port */
    int64_t read_timeout_ms;  /* evhttp idle timeout (see main.c on libevent's single timeout) */
    int64_t write_timeout_ms; /* evhttp idle timeout */
    int64_t exec_timeout_ms;  /* per-call child deadline; 0 = no limit */
    int64_t max_body_bytes;   /* request body limit → 413 */
    int64_t max_output_bytes; /* captured stdout limit → 500 */
    int64_t max_inflight;     /* concurrent calls; 0 = unlimited, over → 429 */
    char *content_type;       /* forced response Content-Type; NULL = echo request's */
    bool combine_output;      /* child stderr goes into the response body too */
    char *log_level;          /* debug|info|warn|error */
    char *log_format;         /* text|json */
};

/* The watchdog's config table (static storage, any thread may read it). */
extern const struct cmn_config_entry wd_config_table[];
/* Number of entries in wd_config_table. */
extern const size_t wd_config_count;

#endif
