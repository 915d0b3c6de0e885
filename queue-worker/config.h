/* The queue-worker's configuration: one struct filled from the environment by
 * the declarative table in config.c (OpenFaaS variable names where OpenFaaS has
 * one). Durations are milliseconds. Read-only after start-up: every thread may
 * read it without locking. */
#ifndef QW_CONFIG_H
#define QW_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include "cmn/config.h"

struct qw_config {
    char *nats_url;
    char *faas_nats_address; /* when set, overrides nats_url with faas_nats_port */
    int64_t faas_nats_port;
    char *faas_nats_channel;     /* stream name = subject */
    char *faas_nats_queue_group; /* durable pull consumer shared by every replica */
    char *faas_gateway_address;
    int64_t faas_gateway_port;
    bool gateway_invoke;
    char *functions_file;
    char *functions_provider_url;
    bool direct_functions;
    char *direct_functions_suffix;
    char *function_namespace;
    int64_t max_inflight;
    int64_t ack_wait_ms;
    int64_t upstream_timeout_ms;
    int64_t max_retry_attempts; /* retries after the first attempt */
    int64_t initial_retry_wait_ms;
    int64_t max_retry_wait_ms;
    int64_t max_retry_after_ms; /* cap of a function's Retry-After */
    struct cmn_config_codes retry_http_codes;
    int64_t callback_timeout_ms;
    int64_t callback_max_attempts;
    char *callback_allowlist; /* destinations callbacks may go to; "" = any */
    char *secret_mount_path;  /* callback-signing-key* files */
    char *dead_letter_stream;
    bool call_records;             /* claim and complete every attempt in the call record */
    char *call_records_bucket;     /* KV bucket of the records */
    int64_t call_record_ttl_ms;    /* record lifetime after its last change */
    int64_t max_call_age_ms;       /* older calls are not started again; 0 = no limit */
    int64_t stream_replicas;       /* streams, consumer: 1..5 */
    int64_t max_ack_pending;       /* consumer cap, -1 = none */
    int64_t nats_ping_interval_ms; /* a server silent for 2 pings is dropped */
    int64_t metrics_port;          /* 0 = no health/metrics server */
    int64_t drain_timeout_ms;
    int64_t faas_max_reconnect;
    int64_t faas_reconnect_delay_ms;
    int64_t max_body_bytes;
    bool write_debug;
    bool faas_print_body;
    char *log_level;
    char *log_format;
};

/* Handles the command line (--help), loads `cfg` (zeroed by the caller) from
 * the environment, sets up logging and prints the effective config. Returns -1
 * to continue, or the exit code (0 after --help, 2 on a bad value or argument,
 * with the reason on stderr). Main thread, at start. */
int qw_config_init(struct qw_config *cfg, int argc, char **argv);

/* Frees the strings of `cfg`. NULL allowed. */
void qw_config_free(struct qw_config *cfg);

/* The NATS URL actually used (faas_nats_address/port or nats_url), in `buf`
 * of `size` bytes; returns `buf`. Any thread. */
const char *qw_config_nats_url(const struct qw_config *cfg, char *buf, size_t size);

#endif
