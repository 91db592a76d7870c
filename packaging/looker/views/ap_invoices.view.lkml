# SPDX-License-Identifier: Apache-2.0
# AP invoices: JD Edwards F0411, one row per pay item.
view: ap_invoices {
  sql_table_name: mlc_staging.ap_invoices ;;

  dimension: pk {
    primary_key: yes
    hidden: yes
    type: string
    sql: ${TABLE}._source_key ;;
  }
  dimension: company       { type: string  sql: ${TABLE}.company ;; }
  dimension: doc           { type: number  sql: ${TABLE}.doc ;;  label: "Document number" value_format_name: id }
  dimension: doc_type      { type: string  sql: ${TABLE}.doc_type ;; }
  dimension: pay_item      { type: string  sql: ${TABLE}.pay_item ;; }
  dimension: supplier      { type: number  sql: ${TABLE}.supplier ;; label: "Supplier number" value_format_name: id }
  dimension: supplier_invoice { type: string  sql: ${TABLE}.supplier_invoice ;; label: "Supplier invoice number" }
  dimension: currency      { type: string  sql: ${TABLE}.currency ;; }
  dimension: business_unit { type: string  sql: ${TABLE}.business_unit ;; label: "Cost centre" }
  dimension: gl_object     { type: string  sql: ${TABLE}.gl_object ;; label: "GL object account" }
  dimension: gl_subsidiary { type: string  sql: ${TABLE}.gl_subsidiary ;; label: "GL subsidiary" }
  dimension: pay_status    { type: string  sql: ${TABLE}.pay_status ;; }
  dimension: is_open {
    type: yesno
    sql: ${TABLE}.open_amount <> 0 ;;
  }
  dimension: gross_amount { type: number  sql: ${TABLE}.gross_amount ;; hidden: yes }
  dimension: open_amount  { type: number  sql: ${TABLE}.open_amount ;;  hidden: yes }

  dimension_group: invoice {
    type: time
    timeframes: [raw, date, week, month, quarter, year]
    datatype: date
    convert_tz: no
    sql: ${TABLE}.invoice_date ;;
  }
  dimension_group: gl {
    type: time
    timeframes: [raw, date, month, quarter, year]
    datatype: date
    convert_tz: no
    sql: ${TABLE}.gl_date ;;
    label: "G/L"
  }
  dimension_group: due {
    type: time
    timeframes: [raw, date, week, month]
    datatype: date
    convert_tz: no
    sql: ${TABLE}.due_date ;;
  }
  dimension_group: loaded {
    type: time
    timeframes: [raw, time, date]
    sql: ${TABLE}._loaded_at ;;
  }

  measure: count { type: count  label: "Pay items" }
  measure: invoice_count {
    type: count_distinct
    sql: ${company} || '-' || ${doc_type} || '-' || ${doc} ;;
    label: "Invoices"
  }
  measure: total_gross_amount { type: sum  sql: ${gross_amount} ;; value_format_name: decimal_2 }
  measure: total_open_amount  { type: sum  sql: ${open_amount} ;;  value_format_name: decimal_2 }
}
