/* The watchdog's one declarative config table: every environment variable the
 * watchdog reads, with its default, range and help line. Names follow the
 * classic OpenFaaS watchdog (fprocess, exec_timeout, content_type, ...). */
#include "config.h"

#include <stddef.h>

#define MIB (1024LL * 1024LL)
#define DAY_MS (24LL * 3600LL * 1000LL)

const struct cmn_config_entry wd_config_table[] = {
    {"fprocess", CMN_CFG_STRING, NULL, 0, -1, offsetof(struct wd_config, fprocess), false,
     "command run once per request via /bin/sh -c (required), body on stdin, stdout is the "
     "response"},
    {"bind_address", CMN_CFG_STRING, "0.0.0.0", 0, -1, offsetof(struct wd_config, bind_address),
     false, "address to listen on"},
    {"port", CMN_CFG_INT, "8080", 1, 65535, offsetof(struct wd_config, port), false,
     "HTTP port to listen on"},
    {"read_timeout", CMN_CFG_DURATION, "10s", 0, DAY_MS,
     offsetof(struct wd_config, read_timeout_ms), false,
     "HTTP read idle timeout (libevent applies max(read_timeout, write_timeout)); 0 = none"},
    {"write_timeout", CMN_CFG_DURATION, "10s", 0, DAY_MS,
     offsetof(struct wd_config, write_timeout_ms), false,
     "HTTP write idle timeout (libevent applies max(read_timeout, write_timeout)); 0 = none"},
    {"exec_timeout", CMN_CFG_DURATION, "10s", 0, DAY_MS,
     offsetof(struct wd_config, exec_timeout_ms), false,
     "deadline per call; the process group is killed and the reply is 504; 0 = no limit"},
    {"max_body_bytes", CMN_CFG_INT, "10485760", 0, 1024LL * MIB,
     offsetof(struct wd_config, max_body_bytes), false,
     "request body limit in bytes (413 over it)"},
    {"max_output_bytes", CMN_CFG_INT, "67108864", 1, 4096LL * MIB,
     offsetof(struct wd_config, max_output_bytes), false,
     "captured stdout limit in bytes; over it the child is killed and the reply is 500"},
    {"max_inflight", CMN_CFG_INT, "0", 0, 1000000, offsetof(struct wd_config, max_inflight), false,
     "concurrent calls allowed (429 over it); 0 = unlimited"},
    {"content_type", CMN_CFG_STRING, NULL, 0, -1, offsetof(struct wd_config, content_type), false,
     "response Content-Type; unset = the request's Content-Type, else text/plain"},
    {"combine_output", CMN_CFG_BOOL, "false", 0, -1, offsetof(struct wd_config, combine_output),
     false, "send the child's stderr into the response body too (classic watchdog default: true)"},
    {"log_level", CMN_CFG_STRING, "info", 0, -1, offsetof(struct wd_config, log_level), false,
     "debug, info, warn or error (debug logs one line per request)"},
    {"log_format", CMN_CFG_STRING, "text", 0, -1, offsetof(struct wd_config, log_format), false,
     "text or json"},
};

const size_t wd_config_count = sizeof wd_config_table / sizeof wd_config_table[0];
