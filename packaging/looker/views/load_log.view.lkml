# SPDX-License-Identifier: Apache-2.0
# load_log: one row per agent run that changed rows (written by mlc-agent).
view: load_log {
  sql_table_name: mlc_staging.load_log ;;

  dimension: id         { primary_key: yes  type: number  sql: ${TABLE}.id ;; hidden: yes }
  dimension: flow       { type: string  sql: ${TABLE}.flow ;; }
  dimension: table_name { type: string  sql: ${TABLE}.table_name ;; }
  dimension: first_audit_id { type: string  sql: ${TABLE}.first_audit_id ;; }
  dimension: last_audit_id  { type: string  sql: ${TABLE}.last_audit_id ;; }
  dimension_group: started {
    type: time
    timeframes: [raw, time, date]
    sql: ${TABLE}.started_at ;;
  }
  dimension_group: finished {
    type: time
    timeframes: [raw, time, date, week]
    sql: ${TABLE}.finished_at ;;
  }

  measure: loads              { type: count }
  measure: total_rows_inserted { type: sum  sql: ${TABLE}.rows_inserted ;; }
  measure: total_rows_updated  { type: sum  sql: ${TABLE}.rows_updated ;; }
  measure: last_load { type: date_time  sql: max(${TABLE}.finished_at) ;; }
}
