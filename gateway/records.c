/* Call-record routes: each request becomes a job in its request's area, run
 * by the records thread with blocking cmn_recq queries and answered on the
 * loop once done (an event activated from the thread). */
#include "records.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "cmn/callrec.h"
#include "cmn/name.h"
#include "cmn/log.h"

#define CALLS_PREFIX "/async-calls/"
#define LIST_PATH "/system/async-calls"
#define DL_PATH "/system/dead-letters"
#define DEFAULT_LIMIT 50

enum job_kind { J_STATUS, J_CANCEL, J_LIST, J_DL_LIST, J_DL_REDRIVE, J_DL_DROP };

struct job {
    struct job *next;
    struct gw_records *rec;
    struct gw_req *r;
    enum job_kind kind;
    char call_id[CMN_CALLID_MAX];
    char function[128]; /* list filter */
    int state;          /* list filter, -1 = any */
    int limit;
    /* the outcome, filled by the thread */
    enum cmn_status status;
    struct cmn_rec record;
    char *json; /* listings */
    char detail[128];
};

_Static_assert(sizeof(struct job) <= GW_REQ_AREA_BYTES, "a job must fit a request's area");

struct gw_records {
    struct gw_records_config cfg;
    struct cmn_recq *q;
    struct event *done_ev;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    struct job *todo_head, *todo_tail, *done_head;
    int queued;
};

/* ---- the records thread -------------------------------------------------- */

static void run_job(struct gw_records *rec, struct job *j)
{
    struct cmn_err err;
    cmn_err_clear(&err);
    switch (j->kind) {
    case J_STATUS:
        j->status = cmn_recq_lookup(rec->q, j->call_id, &j->record, &err);
        break;
    case J_CANCEL:
        j->status = cmn_recq_cancel(rec->q, j->call_id, "cancelled by request", &j->record, &err);
        break;
    case J_LIST:
        j->status = cmn_recq_list(rec->q, j->function, j->state, j->limit, &j->json, &err);
        break;
    case J_DL_LIST:
        j->status = cmn_recq_dead_letters(rec->q, j->limit, &j->json, &err);
        break;
    case J_DL_REDRIVE:
        j->status = cmn_recq_redrive(rec->q, j->call_id, &err);
        break;
    case J_DL_DROP:
        j->status = cmn_recq_drop_dead_letter(rec->q, j->call_id, &err);
        break;
    }
    snprintf(j->detail, sizeof(j->detail), "%.120s", err.msg);
}

static void *thread_main(void *arg)
{
    struct gw_records *rec = arg;
    pthread_mutex_lock(&rec->mu);
    while (!rec->stop) {
        struct job *j = rec->todo_head;
        if (j == NULL) {
            pthread_cond_wait(&rec->cv, &rec->mu);
            continue;
        }
        rec->todo_head = j->next;
        if (rec->todo_head == NULL)
            rec->todo_tail = NULL;
        pthread_mutex_unlock(&rec->mu);
        run_job(rec, j);
        pthread_mutex_lock(&rec->mu);
        if (rec->stop) {
            /* the loop is gone: the request is freed by gw_req_teardown */
            free(j->json);
            j->json = NULL;
            break;
        }
        j->next = rec->done_head;
        rec->done_head = j;
        rec->queued--;
        event_active(rec->done_ev, 0, 0);
    }
    pthread_mutex_unlock(&rec->mu);
    return NULL;
}

/* ---- answers (loop thread) ------------------------------------------------ */

static void reply_json_text(struct gw_req *r, int code, char *json)
{
    if (json == NULL) {
        gw_req_reply_text(r, 500, "out of memory");
        return;
    }
    gw_req_header(r, "Content-Type", "application/json");
    evbuffer_add(r->out_body, json, strlen(json));
    evbuffer_add(r->out_body, "\n", 1);
    free(json);
    gw_req_reply(r, code, NULL);
}

static void reply_unavailable(struct gw_req *r, const struct job *j)
{
    LOG_WARN(r->call_id, "call records: %s", j->detail);
    gw_req_header(r, "Retry-After", "1");
    gw_req_reply_text(r, 503, "call records unavailable (NATS): try again");
}

static void answer(struct job *j)
{
    struct gw_req *r = j->r;
    char text[400];
    switch (j->kind) {
    case J_STATUS:
        if (j->status == CMN_OK)
            reply_json_text(r, 200, cmn_rec_to_json(&j->record, true));
        else if (j->status == CMN_ERR_NOT_FOUND)
            gw_req_reply_text(r, 404, "call not found (unknown, or its record expired)");
        else
            reply_unavailable(r, j);
        break;
    case J_CANCEL:
        if (j->status == CMN_OK) {
            LOG_INFO(j->call_id, "cancelled function=%s", j->record.function);
            reply_json_text(r, 202, cmn_rec_to_json(&j->record, true));
        } else if (j->status == CMN_ERR_CONFLICT && j->record.call_id[0] != '\0') {
            reply_json_text(r, 409, cmn_rec_to_json(&j->record, true));
        } else if (j->status == CMN_ERR_CONFLICT) {
            gw_req_header(r, "Retry-After", "1");
            gw_req_reply_text(r, 503, "the call kept changing while being cancelled: try again");
        } else if (j->status == CMN_ERR_NOT_FOUND) {
            gw_req_reply_text(r, 404, "call not found (unknown, or its record expired)");
        } else {
            reply_unavailable(r, j);
        }
        break;
    case J_LIST:
    case J_DL_LIST:
        if (j->status == CMN_OK) {
            reply_json_text(r, 200, j->json);
            j->json = NULL;
        } else if (j->status == CMN_ERR_NOT_FOUND) {
            snprintf(text, sizeof(text), "%s", j->detail);
            gw_req_reply_text(r, 404, text);
        } else {
            reply_unavailable(r, j);
        }
        break;
    case J_DL_REDRIVE:
    case J_DL_DROP:
        if (j->status == CMN_OK) {
            LOG_INFO(j->call_id, "dead letter %s",
                     j->kind == J_DL_REDRIVE ? "re-driven into the work stream" : "dropped");
            if (j->kind == J_DL_DROP) {
                gw_req_reply(r, 204, NULL);
            } else {
                snprintf(text, sizeof(text), "{\"call_id\":\"%s\",\"state\":\"queued\"}",
                         j->call_id);
                reply_json_text(r, 202, strdup(text));
            }
        } else if (j->status == CMN_ERR_NOT_FOUND) {
            gw_req_reply_text(r, 404, "dead letter not found");
        } else {
            reply_unavailable(r, j);
        }
        break;
    }
    free(j->json);
    j->json = NULL;
    gw_req_close(r);
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_records *rec = arg;
    pthread_mutex_lock(&rec->mu);
    struct job *list = rec->done_head;
    rec->done_head = NULL;
    pthread_mutex_unlock(&rec->mu);
    while (list != NULL) {
        struct job *next = list->next;
        answer(list);
        list = next;
    }
}

static void job_gone(struct gw_req *r, void *state)
{
    (void)state;
    LOG_DEBUG(r->call_id, "client went away before the call-record answer");
}

static void job_abort(struct gw_req *r, void *state)
{
    (void)state;
    gw_req_reply_text(r, 503, "gateway shutting down");
}

static const struct gw_req_hooks job_hooks = {.gone = job_gone, .abort = job_abort};

static struct job *job_new(struct gw_records *rec, struct gw_req *r, enum job_kind kind)
{
    struct job *j = gw_req_area(r);
    memset(j, 0, sizeof(*j));
    j->rec = rec;
    j->r = r;
    j->kind = kind;
    j->state = -1;
    j->limit = DEFAULT_LIMIT;
    return j;
}

static void submit(struct gw_records *rec, struct job *j)
{
    struct gw_req *r = j->r;
    pthread_mutex_lock(&rec->mu);
    bool full = rec->queued >= rec->cfg.max_jobs;
    if (!full) {
        j->next = NULL;
        if (rec->todo_tail != NULL)
            rec->todo_tail->next = j;
        else
            rec->todo_head = j;
        rec->todo_tail = j;
        rec->queued++;
        pthread_cond_signal(&rec->cv);
    }
    pthread_mutex_unlock(&rec->mu);
    if (full) {
        gw_req_header(r, "Retry-After", "1");
        gw_req_reply_text(r, 503, "too many call-record requests waiting: try again");
        return;
    }
    gw_req_hold(r, &job_hooks, j);
}

static bool records_on(struct gw_records *rec, struct gw_req *r)
{
    if (rec != NULL && rec->q != NULL)
        return true;
    gw_req_reply_text(r, 404, "call records are off (call_records=false)");
    return false;
}

static bool take_id(struct gw_req *r, const char *id, size_t len, char *out)
{
    if (len == 0 || len >= CMN_CALLID_MAX) {
        gw_req_reply_text(r, 404, "call not found (unknown, or its record expired)");
        return false;
    }
    memcpy(out, id, len);
    out[len] = '\0';
    if (!cmn_callid_valid(out)) {
        gw_req_reply_text(r, 404, "call not found (unknown, or its record expired)");
        return false;
    }
    return true;
}

/* ---- routes ----------------------------------------------------------------- */

void gw_records_cancel(struct gw_records *rec, struct gw_req *r, const char *call_id)
{
    if (!records_on(rec, r))
        return;
    struct job *j = job_new(rec, r, J_CANCEL);
    if (!take_id(r, call_id, strlen(call_id), j->call_id))
        return;
    submit(rec, j);
}

void gw_records_handle(struct gw_records *rec, struct gw_req *r, const struct gw_target *target)
{
    const char *id = target->path + strlen(CALLS_PREFIX);
    size_t len = strlen(id);
    if (len > 0 && id[len - 1] == '/')
        len--;
    if (r->method != EVHTTP_REQ_GET && r->method != EVHTTP_REQ_HEAD &&
        r->method != EVHTTP_REQ_DELETE) {
        gw_req_header(r, "Allow", "GET, DELETE");
        gw_req_reply_text(r, 405, NULL);
        return;
    }
    if (!records_on(rec, r))
        return;
    struct job *j = job_new(rec, r, r->method == EVHTTP_REQ_DELETE ? J_CANCEL : J_STATUS);
    if (!take_id(r, id, len, j->call_id))
        return;
    submit(rec, j);
}

/* Reads function=, state=, limit= of the listing; false after a 400. */
static bool list_params(struct gw_req *r, const struct gw_target *target, struct job *j)
{
    if (target->query == NULL)
        return true;
    struct evkeyvalq params;
    memset(&params, 0, sizeof(params));
    /* a %00 decodes to a NUL that would cut a value short ("%00" read as
     * "any function"): refused before decoding */
    bool ok =
        strstr(target->query, "%00") == NULL && evhttp_parse_query_str(target->query, &params) == 0;
    const char *fn = ok ? evhttp_find_header(&params, "function") : NULL;
    const char *state = ok ? evhttp_find_header(&params, "state") : NULL;
    const char *limit = ok ? evhttp_find_header(&params, "limit") : NULL;
    if (fn != NULL) {
        /* a name, or name.namespace: anything else (%00 ...) is refused,
         * not read as "any function" */
        struct cmn_fn_name parsed;
        if (fn[0] != '\0' && cmn_name_parse(fn, strlen(fn), "x", &parsed, NULL) != CMN_OK)
            ok = false;
        snprintf(j->function, sizeof(j->function), "%s", fn);
    }
    enum cmn_call_state st;
    if (ok && state != NULL && state[0] != '\0') {
        if (cmn_call_state_parse(state, &st))
            j->state = (int)st;
        else
            ok = false;
    }
    if (ok && limit != NULL) {
        char *end = NULL;
        long v = strtol(limit, &end, 10);
        if (end == limit || *end != '\0' || v < 1 || v > 1000)
            ok = false;
        else
            j->limit = (int)v;
    }
    evhttp_clear_headers(&params);
    if (!ok)
        gw_req_reply_text(r, 400,
                          "bad query: function=<name>, state=<queued|scheduled|running|retrying|"
                          "succeeded|failed|cancelled|expired|dead-lettered>, limit=1..1000");
    return ok;
}

void gw_records_system(struct gw_records *rec, struct gw_req *r, const struct gw_target *target)
{
    const char *p = target->path;
    bool get = r->method == EVHTTP_REQ_GET || r->method == EVHTTP_REQ_HEAD;
    bool calls = strcmp(p, LIST_PATH) == 0 || strcmp(p, LIST_PATH "/") == 0;
    if (calls || strcmp(p, DL_PATH) == 0 || strcmp(p, DL_PATH "/") == 0) {
        if (!get) {
            gw_req_header(r, "Allow", "GET");
            gw_req_reply_text(r, 405, NULL);
            return;
        }
        if (!records_on(rec, r))
            return;
        struct job *j = job_new(rec, r, calls ? J_LIST : J_DL_LIST);
        if (list_params(r, target, j))
            submit(rec, j);
        return;
    }
    if (strncmp(p, DL_PATH "/", sizeof(DL_PATH)) != 0) {
        gw_req_reply_text(r, 404, "404 page not found");
        return;
    }
    const char *id = p + sizeof(DL_PATH);
    const char *slash = strchr(id, '/');
    size_t len = slash != NULL ? (size_t)(slash - id) : strlen(id);
    bool redrive = slash != NULL && strcmp(slash, "/redrive") == 0;
    if (slash != NULL && !redrive) {
        gw_req_reply_text(r, 404, "404 page not found");
        return;
    }
    if ((redrive && r->method != EVHTTP_REQ_POST) || (!redrive && r->method != EVHTTP_REQ_DELETE)) {
        gw_req_header(r, "Allow", redrive ? "POST" : "DELETE");
        gw_req_reply_text(r, 405, NULL);
        return;
    }
    if (!records_on(rec, r))
        return;
    struct job *j = job_new(rec, r, redrive ? J_DL_REDRIVE : J_DL_DROP);
    if (len == 0 || len >= CMN_CALLID_MAX) {
        gw_req_reply_text(r, 404, "dead letter not found");
        return;
    }
    memcpy(j->call_id, id, len);
    j->call_id[len] = '\0';
    if (!cmn_callid_valid(j->call_id)) {
        gw_req_reply_text(r, 404, "dead letter not found");
        return;
    }
    submit(rec, j);
}

/* ---- lifecycle ----------------------------------------------------------- */

enum cmn_status gw_records_new(const struct gw_records_config *config, struct gw_records **out,
                               struct cmn_err *err)
{
    struct gw_records *rec = calloc(1, sizeof(*rec));
    if (rec == NULL)
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "records: out of memory");
    rec->cfg = *config;
    if (rec->cfg.max_jobs <= 0)
        rec->cfg.max_jobs = 1024;
    pthread_mutex_init(&rec->mu, NULL);
    pthread_cond_init(&rec->cv, NULL);
    rec->done_ev = event_new(config->base, -1, 0, done_cb, rec);
    if (rec->done_ev == NULL) {
        gw_records_free(rec);
        return cmn_err_set(err, CMN_ERR_NOMEM, 0, "records: out of memory");
    }
    if (config->nats != NULL) {
        struct cmn_recq_config qc = {.bucket = config->bucket,
                                     .stream = config->stream,
                                     .queues = config->queues,
                                     .queues_arg = config->queues_arg,
                                     .dead_letter_stream = config->dead_letter_stream,
                                     .timeout_ms = 2000};
        enum cmn_status st = cmn_recq_new(config->nats, &qc, &rec->q, err);
        if (st != CMN_OK) {
            gw_records_free(rec);
            return st;
        }
        if (pthread_create(&rec->thread, NULL, thread_main, rec) != 0) {
            gw_records_free(rec);
            return cmn_err_set(err, CMN_ERR_IO, 0, "records: cannot start its thread");
        }
        rec->started = true;
    }
    *out = rec;
    return CMN_OK;
}

void gw_records_free(struct gw_records *rec)
{
    if (rec == NULL)
        return;
    pthread_mutex_lock(&rec->mu);
    rec->stop = true;
    pthread_cond_broadcast(&rec->cv);
    pthread_mutex_unlock(&rec->mu);
    if (rec->started)
        pthread_join(rec->thread, NULL);
    for (struct job *j = rec->done_head; j != NULL; j = j->next) {
        free(j->json);
        j->json = NULL;
    }
    if (rec->done_ev != NULL)
        event_free(rec->done_ev);
    cmn_recq_free(rec->q);
    pthread_mutex_destroy(&rec->mu);
    pthread_cond_destroy(&rec->cv);
    free(rec);
}
