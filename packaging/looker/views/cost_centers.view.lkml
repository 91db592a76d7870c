# SPDX-License-Identifier: Apache-2.0
# Cost centres: JD Edwards business units (F0006), codes trimmed by the agent.
view: cost_centers {
  sql_table_name: mlc_staging.cost_centers ;;

  dimension: business_unit {
    primary_key: yes
    type: string
    sql: ${TABLE}.business_unit ;;
    label: "Cost centre"
  }
  dimension: description     { type: string  sql: ${TABLE}.description ;; label: "Cost centre name" }
  dimension: company         { type: string  sql: ${TABLE}.company ;; }
  dimension: bu_type         { type: string  sql: ${TABLE}.bu_type ;; label: "Business unit type" }
  dimension: level_of_detail { type: string  sql: ${TABLE}.level_of_detail ;; label: "Level of detail (LDM)" }

  measure: count { type: count  label: "Cost centres" }
}
