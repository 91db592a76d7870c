/* SPDX-License-Identifier: Apache-2.0
 * writeback: changes made at a flow's target written back into its source,
 * from the agent's inbox, through the source connector's write_back().
 *
 * Config, per flow ("flows.<name>.writeback"); the members that say how to
 * write (JD Edwards: "orchestration", "inputs") belong to the source
 * connector (its wb_keys), the rest to the core:
 *   {
 *     "orchestration": "MLC_UpdateWOStatus",              (source connector)
 *     "inputs": {"WorkOrder": "{key}", "Status": "{code}"}, (source connector)
 *     "verify": {"SRST": "{code}"},
 *     "status_map": {"To Do": "10", "In Progress": "40", "Done": "95"},
 *     "hold": {"statuses": ["Blocked"], "orchestration": "MLC_HoldWorkOrder",
 *              "inputs": {"WorkOrder": "{key}", "HoldCode": "H1"}, "verify": {"WR10": "H1"}},
 *     "fields": {"duedate": {"orchestration": "MLC_UpdateWODates",
 *                            "inputs": {"WorkOrder": "{key}", "RequestedDate": "{value}"},
 *                            "conflict": "target_wins"}},
 *     "echo_ttl": "10m", "settle_after": "2m",
 *     "agent_account": "712020:aaaa0000-..."
 *   }
 * Status placeholders: {key} source key, {code} mapped status code, {status}
 * the target's status name, {issue} target record key, {audit_id}; "{{" is a
 * literal "{". {code} is not available to a hold. Field placeholders: {key},
 * {value} (the target's new value turned back into the source's format by
 * reversing the flow's mapping of that field), {issue}, {audit_id}.
 *
 * A field is read from the source before it is written: when the source
 * holds the new value already nothing is written (the agent's own change
 * coming back: an echo); when the source's value differs from both the
 * change's old and new value, both sides changed it since the last sync and
 * the field's "conflict" rule decides: source_wins (default: not written;
 * the next sync carries the source's value to the target), target_wins
 * (written), newest_wins (the later change wins; the source's change time is
 * its cursor's time; an unknown time keeps the source's value). Every
 * conflict is an audit row "writeback_conflict".
 *
 * Inbox deliveries are applied by writeback_drain(), idempotently: each
 * inbox row is applied at most once (its state is committed with the audit
 * entry), and a value the agent itself wrote lately (echo table, per field)
 * or a change authored by the agent's own target account is an echo.
 */
#ifndef MLC_WRITEBACK_H
#define MLC_WRITEBACK_H

#include <cjson/cJSON.h>
#include "agent/connectors/connector.h"
#include "agent/mapping.h"
#include "shared/mlc_err.h"

struct agent;
struct writeback;

/* Validate and compile a flow's "writeback" object for its source
 * connector and mapping (lent; must outlive it); path for messages. NULL
 * with err set on a bad config. */
struct writeback *writeback_compile(const cJSON *conf, const char *path,
                                    const struct connector *src, const struct mapping *map,
                                    struct mlc_errbuf *err);
void writeback_free(struct writeback *wb);

struct wb_stats {
    long applied;   /* written (or found done: settled) */
    long settled;   /* of applied: in flight after a crash, found already done, not called */
    long ignored;   /* no written-back field changed, unmapped status, unknown record, ... */
    long echoes;    /* dropped as the agent's own write */
    long conflicts; /* both sides changed a field: decided by its rule */
    long failed;    /* gave up (dead) after the flow's max_attempts */
    long retry;     /* failed for now, retried later */
    long waiting;   /* in flight, read back once settle_after has passed */
};

/* A delivery of kind "TYPE" (parsed by that connector's event_parse) or
 * "TYPE-poll" (a polled change's generic JSON). The caller releases ch with
 * change_release, also after an error. */
enum mlc_rc writeback_change_parse(const char *kind, const char *body, struct change *ch,
                                   struct mlc_errbuf *err);

/* Apply up to max pending inbox deliveries (oldest first) using the agent's
 * own state handle. Returns MLC_OK unless the state database failed. */
enum mlc_rc writeback_drain(struct agent *a, int max, struct wb_stats *ws, struct mlc_errbuf *err);

#endif
