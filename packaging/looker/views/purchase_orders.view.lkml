# SPDX-License-Identifier: Apache-2.0
# Purchase order headers: JD Edwards F4301.
view: purchase_orders {
  sql_table_name: mlc_staging.purchase_orders ;;

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
  dimension: supplier      { type: number  sql: ${TABLE}.supplier ;; label: "Supplier number" value_format_name: id }
  dimension: business_unit { type: string  sql: ${TABLE}.business_unit ;; label: "Cost centre" }
  dimension: currency      { type: string  sql: ${TABLE}.currency ;; }
  dimension: buyer         { type: string  sql: ${TABLE}.buyer ;; label: "Ordered by" }
  dimension: order_amount  { type: number  sql: ${TABLE}.order_amount ;; hidden: yes }

  dimension_group: order {
    type: time
    timeframes: [raw, date, week, month, quarter, year]
    datatype: date
    convert_tz: no
    sql: ${TABLE}.order_date ;;
  }
  dimension_group: requested {
    type: time
    timeframes: [raw, date, month]
    datatype: date
    convert_tz: no
    sql: ${TABLE}.requested_date ;;
  }

  measure: count { type: count  label: "Orders" }
  measure: total_order_amount { type: sum  sql: ${order_amount} ;; value_format_name: decimal_2 }
}
