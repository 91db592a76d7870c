/* SPDX-License-Identifier: Apache-2.0
 * writeback: changes made in the target (Jira status) written back into the
 * source (a JD Edwards orchestration), from the agent's inbox.
 *
 * Config, per flow ("flows.<name>.writeback"):
 *   {
 *     "orchestration": "MLC_UpdateWOStatus",
 *     "inputs": {"WorkOrder": "{key}", "Status": "{code}"},
 *     "status_map": {"To Do": "10", "In Progress": "40", "Done": "95"},
 *     "hold": {"statuses": ["Blocked"], "orchestration": "MLC_HoldWorkOrder",
 *              "inputs": {"WorkOrder": "{key}", "HoldCode": "H1"}},
 *     "echo_ttl": "10m",
 *     "agent_account": "712020:aaaa0000-..."
 *   }
 * Placeholders: {key} source key, {code} mapped status code, {status} the
 * target's status name, {issue} target key, {audit_id}; "{{" is a literal
 * "{". {code} is not available in hold.inputs. Status names match without
 * regard to case; a status is either in hold.statuses or in status_map.
 * agent_account (optional): the Jira accountId the agent writes as; events
 * it authored are echoes. echo_ttl: how long a value the agent wrote (the
 * last one per record) makes an identical incoming change an echo; 0 = off.
 *
 * Inbox deliveries are applied by writeback_drain(), idempotently: each
 * inbox row is applied at most once (its state is committed with the audit
 * entry), and a status the agent itself wrote lately (echo table) or an
 * event authored by the agent's own target account is dropped as an echo.
 */
#ifndef MLC_WRITEBACK_H
#define MLC_WRITEBACK_H

#include <cjson/cJSON.h>
#include "shared/mlc_err.h"

struct agent;
struct writeback;

/* Validate and compile a flow's "writeback" object; path for messages.
 * NULL with err set on a bad config. */
struct writeback *writeback_compile(const cJSON *conf, const char *path, struct mlc_errbuf *err);
void writeback_free(struct writeback *wb);

struct wb_stats {
    long applied;   /* orchestration called and succeeded (or found done: settled) */
    long settled;   /* of applied: in flight after a crash, found already done, not called */
    long ignored;   /* no status change, unmapped status, unknown issue, other events */
    long echoes;    /* dropped as the agent's own write */
    long failed;    /* gave up (dead) after the flow's max_attempts */
    long retry;     /* failed for now, retried later */
    long waiting;   /* in flight, read back once settle_after has passed */
};

/* What one Jira webhook body says (strings lent from root; the caller
 * frees root with cJSON_Delete, also after an error). */
struct wb_event {
    cJSON *root;
    const char *event;     /* webhookEvent */
    const char *issue_key;
    const char *author;    /* user.accountId */
    const char *status;    /* the last status changelog item's toString */
    const char *from;      /* its fromString */
    const cJSON *labels;
    long long at_ms;       /* timestamp, 0 when absent */
};
/* Parse a delivery body (network input); MLC_E_PROTO when it is not a JSON object. */
enum mlc_rc writeback_event_parse(const char *body, struct wb_event *ev, struct mlc_errbuf *err);

/* Apply up to max pending inbox deliveries (oldest first) using the agent's
 * own state handle. Returns MLC_OK unless the state database failed. */
enum mlc_rc writeback_drain(struct agent *a, int max, struct wb_stats *ws, struct mlc_errbuf *err);

#endif
