# SPDX-License-Identifier: Apache-2.0
# Suppliers: JD Edwards address book (F0101), search type V.
view: suppliers {
  sql_table_name: mlc_staging.suppliers ;;

  dimension: address_number {
    primary_key: yes
    type: number
    sql: ${TABLE}.address_number ;;
    value_format_name: id
    label: "Supplier number"
  }
  dimension: name        { type: string  sql: ${TABLE}.name ;; label: "Supplier name" }
  dimension: search_type { type: string  sql: ${TABLE}.search_type ;; }

  measure: count { type: count  label: "Suppliers" }
}
