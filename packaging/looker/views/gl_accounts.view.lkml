# SPDX-License-Identifier: Apache-2.0
# GL account master: JD Edwards F0901 (account = business unit . object . subsidiary).
view: gl_accounts {
  sql_table_name: mlc_staging.gl_accounts ;;

  dimension: account_id {
    primary_key: yes
    type: string
    sql: ${TABLE}.account_id ;;
    label: "Account ID"
  }
  dimension: company       { type: string  sql: ${TABLE}.company ;; }
  dimension: business_unit { type: string  sql: ${TABLE}.business_unit ;; }
  dimension: gl_object     { type: string  sql: ${TABLE}.gl_object ;; label: "Object account" }
  dimension: gl_subsidiary { type: string  sql: ${TABLE}.gl_subsidiary ;; label: "Subsidiary" }
  dimension: account {
    type: string
    sql: ${business_unit} || '.' || ${gl_object} || coalesce(nullif('.' || ${gl_subsidiary}, '.'), '') ;;
    label: "Account (BU.Object.Sub)"
  }
  dimension: description     { type: string  sql: ${TABLE}.description ;; }
  dimension: level_of_detail { type: string  sql: ${TABLE}.level_of_detail ;; }
  dimension: posting_edit    { type: string  sql: ${TABLE}.posting_edit ;; }

  measure: count { type: count  label: "Accounts" }
}
