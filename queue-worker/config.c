/* The queue-worker's configuration table: every environment variable it reads,
 * with type, default, range and help. cmn_config turns the table into parsing,
 * validation (exit 2), --help and docs/configuration.md. */
#include "config.h"

#include <stddef.h>
#include <stdio.h>

#include "cmn/log.h"

#define PROGRAM "queue-worker"
#define F(field) offsetof(struct qw_config, field)
#define SEC 1000LL

static const struct cmn_config_entry table[] = {
    {"nats_url", CMN_CFG_STRING, "nats://127.0.0.1:4222", 0, -1, F(nats_url), false,
     "NATS server URL(s), comma separated"},
    {"faas_nats_address", CMN_CFG_STRING, NULL, 0, -1, F(faas_nats_address), false,
     "NATS host (OpenFaaS name); when set, overrides nats_url as nats://<address>:<port>"},
    {"faas_nats_port", CMN_CFG_INT, "4222", 1, 65535, F(faas_nats_port), false,
     "NATS port used with faas_nats_address"},
    {"faas_nats_channel", CMN_CFG_STRING, "faas-request", 0, -1, F(faas_nats_channel), false,
     "JetStream stream name and subject of the queue"},
    {"faas_nats_queue_group", CMN_CFG_STRING, "faas-workers", 0, -1, F(faas_nats_queue_group),
     false, "durable pull consumer shared by every worker replica"},
    {"faas_gateway_address", CMN_CFG_STRING, "127.0.0.1", 0, -1, F(faas_gateway_address), false,
     "gateway host used when gateway_invoke=true"},
    {"faas_gateway_port", CMN_CFG_INT, "8080", 1, 65535, F(faas_gateway_port), false,
     "gateway port used when gateway_invoke=true"},
    {"gateway_invoke", CMN_CFG_BOOL, "true", 0, -1, F(gateway_invoke), false,
     "true: invoke via the gateway's /function/<name>; false: call the function directly "
     "(resolver settings below)"},
    {"functions_file", CMN_CFG_STRING, NULL, 0, -1, F(functions_file), false,
     "functions.json for direct invocation (static resolver)"},
    {"functions_provider_url", CMN_CFG_STRING, NULL, 0, -1, F(functions_provider_url), false,
     "direct invocation through an OpenFaaS provider: <url>/function/<name>.<namespace>"},
    {"direct_functions", CMN_CFG_BOOL, "false", 0, -1, F(direct_functions), false,
     "direct invocation through DNS: http://<name>.<namespace>.<suffix>:8080"},
    {"direct_functions_suffix", CMN_CFG_STRING, "svc.cluster.local", 0, -1,
     F(direct_functions_suffix), false, "DNS suffix for direct_functions"},
    {"function_namespace", CMN_CFG_STRING, "openfaas-fn", 0, -1, F(function_namespace), false,
     "namespace of function names given without one"},
    {"max_inflight", CMN_CFG_INT, "50", 1, 10000, F(max_inflight), false,
     "calls in progress at once per worker (invocations and their callbacks)"},
    {"ack_wait", CMN_CFG_DURATION, "60s", 100, 3600 * SEC, F(ack_wait_ms), false,
     "lease of a fetched call; renewed every ack_wait/3 while it runs, so it only decides how "
     "fast a dead worker's calls are redelivered"},
    {"upstream_timeout", CMN_CFG_DURATION, "60s", 1, 24 * 3600 * SEC, F(upstream_timeout_ms), false,
     "deadline of one function invocation (then status 504)"},
    {"max_retry_attempts", CMN_CFG_INT, "10", 0, 1000, F(max_retry_attempts), false,
     "retries after the first attempt for retry_http_codes and transport errors"},
    {"initial_retry_wait", CMN_CFG_DURATION, "10s", 0, 24 * 3600 * SEC, F(initial_retry_wait_ms),
     false, "first retry delay; doubles per attempt (equal jitter), also the Retry-After floor"},
    {"max_retry_wait", CMN_CFG_DURATION, "120s", 0, 24 * 3600 * SEC, F(max_retry_wait_ms), false,
     "longest computed retry delay (exponential back-off)"},
    {"max_retry_after", CMN_CFG_DURATION, "10m", 0, 24 * 3600 * SEC, F(max_retry_after_ms), false,
     "longest delay a function's Retry-After may ask for (honoured up to this, as Knative's "
     "retryAfterMax; never cut to max_retry_wait)"},
    {"retry_http_codes", CMN_CFG_CODES, "408,429,500,502,503,504", 0, -1, F(retry_http_codes),
     false, "function statuses that are retried"},
    {"callback_timeout", CMN_CFG_DURATION, "10s", 1, 3600 * SEC, F(callback_timeout_ms), false,
     "deadline of one callback POST"},
    {"callback_max_attempts", CMN_CFG_INT, "3", 1, 20, F(callback_max_attempts), false,
     "callback POST attempts (back-off 1s, 2s, 4s ...) before giving up"},
    {"callback_allowlist", CMN_CFG_STRING, "", 0, -1, F(callback_allowlist), false,
     "allowed callback destinations: host, host:port, *.domain, address, CIDR, comma separated, "
     "checked on the address each attempt connects to; empty = any (warned at start)"},
    {"secret_mount_path", CMN_CFG_STRING, "/var/secrets", 0, -1, F(secret_mount_path), false,
     "directory of the callback signing keys: files callback-signing-key[-<name>] holding a "
     "Standard Webhooks secret (whsec_<base64>); none = callbacks unsigned (warned at start)"},
    {"dead_letter_stream", CMN_CFG_STRING, "faas-request-dlq", 0, -1, F(dead_letter_stream), false,
     "stream receiving calls that exhausted their retries or cannot be decoded"},
    {"call_records", CMN_CFG_BOOL, "true", 0, -1, F(call_records), false,
     "claim each attempt in the call record (compare-and-set) so that exactly one worker runs it "
     "and posts its callback; status and cancel need it; must match the gateway's"},
    {"call_records_bucket", CMN_CFG_STRING, "faas-calls", 0, -1, F(call_records_bucket), false,
     "JetStream key-value bucket of the call records"},
    {"call_record_ttl", CMN_CFG_DURATION, "24h", 60 * SEC, 365LL * 86400 * SEC,
     F(call_record_ttl_ms), false, "how long a call record is kept after its last change"},
    {"max_call_age", CMN_CFG_DURATION, "0", 0, 365LL * 86400 * SEC, F(max_call_age_ms), false,
     "a call older than this (since submission, or since its not-before time) is not started "
     "again: dead-lettered with reason expired; 0 = no limit"},
    {"stream_replicas", CMN_CFG_INT, "1", 1, 5, F(stream_replicas), false,
     "replicas of the streams and the consumer (3 on a JetStream cluster)"},
    {"max_ack_pending", CMN_CFG_INT, "-1", -1, 100000000, F(max_ack_pending), false,
     "consumer cap on delivered, unacknowledged calls (-1 = none): calls parked for a retry "
     "count against it, so a cap can stall every function behind one failing one"},
    {"nats_ping_interval", CMN_CFG_DURATION, "1s", 100, 600 * SEC, F(nats_ping_interval_ms), false,
     "ping period; a server silent for 2 pings is left for another"},
    {"metrics_port", CMN_CFG_INT, "8081", 0, 65535, F(metrics_port), false,
     "port of GET /healthz and GET /metrics; 0 = off"},
    {"drain_timeout", CMN_CFG_DURATION, "30s", 0, 3600 * SEC, F(drain_timeout_ms), false,
     "on SIGTERM, how long in-flight calls may finish before they are handed back (NAK)"},
    {"faas_max_reconnect", CMN_CFG_INT, "120", -1, 1000000, F(faas_max_reconnect), false,
     "NATS reconnect attempts before the worker exits non-zero (-1 = forever)"},
    {"faas_reconnect_delay", CMN_CFG_DURATION, "2s", 10, 3600 * SEC, F(faas_reconnect_delay_ms),
     false, "wait between NATS reconnect attempts"},
    {"max_body_bytes", CMN_CFG_INT, "983040", 1, 64LL * 1024 * 1024, F(max_body_bytes), false,
     "request body limit; the stream is created with MaxMsgSize = this + 64 KiB"},
    {"write_debug", CMN_CFG_BOOL, "false", 0, -1, F(write_debug), false,
     "log function response bodies"},
    {"faas_print_body", CMN_CFG_BOOL, "false", 0, -1, F(faas_print_body), false,
     "log request bodies"},
    {"log_level", CMN_CFG_STRING, "info", 0, -1, F(log_level), false, "debug, info, warn or error"},
    {"log_format", CMN_CFG_STRING, "text", 0, -1, F(log_format), false, "text or json"},
};

#define TABLE_COUNT (sizeof(table) / sizeof(table[0]))

static int invalid(const char *why)
{
    fprintf(stderr, "%s: invalid configuration: %s\n", PROGRAM, why);
    return 2;
}

int qw_config_init(struct qw_config *cfg, int argc, char **argv)
{
    int code = cmn_config_handle_args(argc, argv, PROGRAM, table, TABLE_COUNT);
    if (code >= 0)
        return code;
    /* Logging must be set up before cmn_config_load_or_exit_code logs the
     * effective config, but its settings come from the same table: load once
     * quietly for them, then for real. */
    struct cmn_err err;
    if (cmn_config_load(table, TABLE_COUNT, cfg, &err) != CMN_OK)
        return invalid(err.msg);
    if (!cmn_log_setup(cfg->log_level, cfg->log_format))
        return invalid("log_level must be debug|info|warn|error, log_format text|json");
    qw_config_free(cfg);
    code = cmn_config_load_or_exit_code(PROGRAM, table, TABLE_COUNT, cfg);
    if (code >= 0)
        return code;
    if (cfg->max_retry_wait_ms < cfg->initial_retry_wait_ms)
        return invalid("max_retry_wait must be >= initial_retry_wait");
    if (cfg->max_retry_after_ms < cfg->initial_retry_wait_ms)
        return invalid("max_retry_after must be >= initial_retry_wait");
    if (cfg->max_ack_pending == 0 ||
        (cfg->max_ack_pending > 0 && cfg->max_ack_pending < cfg->max_inflight))
        return invalid("max_ack_pending must be -1 (no cap) or at least max_inflight");
    if (!cfg->faas_nats_channel[0] || !cfg->faas_nats_queue_group[0])
        return invalid("faas_nats_channel and faas_nats_queue_group must not be empty");
    if (!cfg->gateway_invoke && !cfg->direct_functions &&
        !(cfg->functions_file && cfg->functions_file[0]) &&
        !(cfg->functions_provider_url && cfg->functions_provider_url[0]))
        return invalid("gateway_invoke=false needs functions_file, functions_provider_url or "
                       "direct_functions=true");
    return -1;
}

void qw_config_free(struct qw_config *cfg)
{
    if (cfg)
        cmn_config_free(table, TABLE_COUNT, cfg);
}

const char *qw_config_nats_url(const struct qw_config *cfg, char *buf, size_t size)
{
    if (cfg->faas_nats_address && cfg->faas_nats_address[0])
        snprintf(buf, size, "nats://%s:%lld", cfg->faas_nats_address,
                 (long long)cfg->faas_nats_port);
    else
        snprintf(buf, size, "%s", cfg->nats_url);
    return buf;
}
