/* The single encoder/decoder of a queued call (wire format version 1,
 * DESIGN.md §3, docs/wire-format.md). A queued call is one NATS message whose
 * payload is the raw request body and whose NATS headers carry the metadata.
 * This module works on a struct cmn_headers so it is testable without NATS;
 * cmn/js.h moves the headers to and from natsMsg. */
#ifndef CMN_CODEC_H
#define CMN_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include "cmn/callid.h"
#include "cmn/fnpolicy.h"
#include "cmn/headers.h"
#include "cmn/status.h"

#define CMN_WIRE_VERSION "1"

/* Largest total of request header bytes (name + value + 4 per header) a queued
 * call carries; NATS limits a message's header block to 64 KiB and the
 * metadata needs room too. */
#define CMN_HEADERS_MAX_BYTES 60000

#define CMN_HDR_MSG_ID "Nats-Msg-Id"
#define CMN_HDR_VERSION "Faas-Version"
#define CMN_HDR_FUNCTION "Faas-Function"
#define CMN_HDR_METHOD "Faas-Method"
#define CMN_HDR_PATH "Faas-Path"
#define CMN_HDR_QUERY "Faas-Query"
#define CMN_HDR_CALLBACK "Faas-Callback-Url"
#define CMN_HDR_START "Faas-Start-Time"
/* Optional: run no earlier than this (ns since the Unix epoch; delayed calls). */
#define CMN_HDR_NOT_BEFORE "Faas-Not-Before"
/* Optional: the call id when Nats-Msg-Id is not it (a re-driven dead letter is
 * published under "<call id>/r<n>" so that the duplicate window keeps it). */
#define CMN_HDR_CALL_ID "Faas-Call-Id"
/* Optional: the function's policy (cmn/fnpolicy.h), stamped by the gateway
 * from its annotations. Faas-Queue names the queue of a function annotated
 * com.openfaas.queue (a re-drive goes back there); the retry overrides are
 * whole numbers (attempts; waits in milliseconds) and a status list. */
#define CMN_HDR_QUEUE "Faas-Queue"
#define CMN_HDR_RETRY_ATTEMPTS "Faas-Retry-Attempts"
#define CMN_HDR_RETRY_CODES "Faas-Retry-Codes"
#define CMN_HDR_RETRY_MIN_WAIT "Faas-Retry-Min-Wait"
#define CMN_HDR_RETRY_MAX_WAIT "Faas-Retry-Max-Wait"
/* Optional: a call queued from another call's callback (a chain through the
 * async route): the parent's call id and this call's depth in the chain
 * (1 = the first call made from a callback). */
#define CMN_HDR_PARENT_CALL_ID "Faas-Parent-Call-Id"
#define CMN_HDR_CHAIN_DEPTH "Faas-Chain-Depth"
/* Dead-letter additions (written by the worker when it dead-letters a call). */
#define CMN_HDR_DEAD_REASON "Faas-Dead-Reason"
#define CMN_HDR_LAST_STATUS "Faas-Last-Status"
#define CMN_HDR_ATTEMPTS "Faas-Attempts"

/* A decoded call. Strings are owned by the struct (cmn_call_free); the body is
 * borrowed from whoever holds the message and is not part of the struct. */
struct cmn_call {
    char call_id[CMN_CALLID_MAX];
    char *function;              /* "name" or "name.namespace" as submitted */
    char *method;                /* "POST" */
    char *path;                  /* "" , "/", "/a/b" */
    char *query;                 /* raw, without '?', may be "" */
    char *callback_url;          /* NULL when none */
    int64_t start_ns;            /* submission time, ns since the Unix epoch */
    int64_t not_before_ns;       /* delayed call: not run before (ns since the epoch), 0 = now */
    struct cmn_headers headers;  /* the request headers to replay (no Faas-/Nats-, no hop-by-hop) */
    struct cmn_fn_policy policy; /* queue and retry overrides; all defaults when absent */
    char parent_id[CMN_CALLID_MAX]; /* the parent call of a chained call, "" = none */
    int chain_depth;                /* 0 = not chained */
};

/* Initialises an empty call. */
void cmn_call_init(struct cmn_call *call);

/* Frees what the call owns; leaves it empty. NULL allowed. */
void cmn_call_free(struct cmn_call *call);

/* Encodes `call` (borrowed) into `out` (appended to; caller owns the list):
 * metadata headers first, then the request headers, skipping reserved
 * (Faas-/Nats-) and hop-by-hop names. Returns CMN_ERR_INVALID if a required
 * field is missing, a header name is not an HTTP token, a value holds CR/LF,
 * or the request headers exceed CMN_HEADERS_MAX_BYTES; CMN_ERR_NOMEM.
 * Pure, any thread. */
enum cmn_status cmn_call_encode(const struct cmn_call *call, struct cmn_headers *out,
                                struct cmn_err *err);

/* Same encoding as cmn_call_encode, but hands each header to `sink` (with
 * `arg`) instead of building a list: no copies (the JetStream wrapper writes
 * them straight into the NATS message). On error the sink may already have
 * received some headers; the caller discards what it built. Errors:
 * CMN_ERR_INVALID as cmn_call_encode, or the sink's status. Pure, any thread. */
enum cmn_status cmn_call_encode_each(const struct cmn_call *call, cmn_header_sink sink, void *arg,
                                     struct cmn_err *err);

/* Decodes message headers `in` (borrowed) into `call` (must be initialised and
 * empty; filled only on success). Requires Faas-Version 1, Nats-Msg-Id,
 * Faas-Function, Faas-Method, Faas-Start-Time; Faas-Path/Faas-Query default to "".
 * Returns CMN_ERR_INVALID with a reason for anything else (the worker dead-letters
 * such a message). Pure, any thread. */
enum cmn_status cmn_call_decode(const struct cmn_headers *in, struct cmn_call *call,
                                struct cmn_err *err);

#endif
