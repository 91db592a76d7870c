# SPDX-License-Identifier: Apache-2.0
# Purchase order lines: JD Edwards F4311.
view: purchase_order_lines {
  sql_table_name: mlc_staging.purchase_order_lines ;;

  dimension: pk {
    primary_key: yes
    hidden: yes
    type: string
    sql: ${TABLE}._source_key ;;
  }
  dimension: company       { type: string  sql: ${TABLE}.company ;; }
  dimension: order_no      { type: number  sql: ${TABLE}.order_no ;; value_format_name: id }
  dimension: order_type    { type: string  sql: ${TABLE}.order_type ;; }
  dimension: order_suffix  { type: string  sql: ${TABLE}.order_suffix ;; }
  dimension: line_no       { type: number  sql: ${TABLE}.line_no ;; value_format_name: decimal_3 }
  dimension: item          { type: string  sql: ${TABLE}.item ;; }
  dimension: description   { type: string  sql: ${TABLE}.description ;; }
  dimension: business_unit { type: string  sql: ${TABLE}.business_unit ;; label: "Cost centre" }
  dimension: gl_object     { type: string  sql: ${TABLE}.gl_object ;; label: "GL object account" }
  dimension: gl_subsidiary { type: string  sql: ${TABLE}.gl_subsidiary ;; label: "GL subsidiary" }
  dimension: last_status   { type: string  sql: ${TABLE}.last_status ;; }
  dimension: next_status   { type: string  sql: ${TABLE}.next_status ;; }
  dimension: line_type     { type: string  sql: ${TABLE}.line_type ;; label: "Line type (S stock, N non-stock)" }
  dimension: quantity      { type: number  sql: ${TABLE}.quantity ;; hidden: yes }
  dimension: unit_cost     { type: number  sql: ${TABLE}.unit_cost ;; value_format_name: decimal_4 }
  dimension: extended_amount { type: number  sql: ${TABLE}.extended_amount ;; hidden: yes }

  dimension_group: requested {
    type: time
    timeframes: [raw, date, month]
    datatype: date
    convert_tz: no
    sql: ${TABLE}.requested_date ;;
  }

  measure: count { type: count  label: "Lines" }
  measure: total_quantity        { type: sum  sql: ${quantity} ;; }
  measure: total_extended_amount { type: sum  sql: ${extended_amount} ;; value_format_name: decimal_2 }
}
