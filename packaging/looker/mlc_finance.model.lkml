# SPDX-License-Identifier: Apache-2.0
# ml-connector: JD Edwards finance data in PostgreSQL staging tables
# (schema mlc_staging, loaded by mlc-agent). See README.md in this folder.

connection: "mlc_warehouse"
include: "/views/*.view.lkml"

# One row per agent run that changed rows is appended to load_log; a new
# maximum of finished_at means new data. With an API credential the agent
# also triggers this datagroup right after each load (after_load), so the
# refresh does not wait for the next trigger check.
datagroup: mlc_staging_load {
  label: "ml-connector staging load"
  description: "Triggered when mlc-agent finishes a load into mlc_staging"
  sql_trigger: SELECT max(finished_at) FROM mlc_staging.load_log ;;
  max_cache_age: "24 hours"
}

persist_with: mlc_staging_load

explore: ap_invoices {
  label: "AP invoices (JD Edwards)"
  description: "Open and paid AP invoices (F0411) with supplier, cost centre and GL account"

  join: suppliers {
    type: left_outer
    relationship: many_to_one
    sql_on: ${ap_invoices.supplier} = ${suppliers.address_number} ;;
  }
  join: cost_centers {
    type: left_outer
    relationship: many_to_one
    sql_on: ${ap_invoices.business_unit} = ${cost_centers.business_unit} ;;
  }
  join: gl_accounts {
    type: left_outer
    relationship: many_to_one
    sql_on: ${ap_invoices.business_unit} = ${gl_accounts.business_unit}
        AND ${ap_invoices.gl_object} = ${gl_accounts.gl_object}
        AND coalesce(${ap_invoices.gl_subsidiary}, '') = coalesce(${gl_accounts.gl_subsidiary}, '') ;;
  }
}

explore: purchase_orders {
  label: "Purchase orders (JD Edwards)"
  description: "Purchase order headers (F4301) and lines (F4311) with supplier and cost centre"

  join: purchase_order_lines {
    type: left_outer
    relationship: one_to_many
    sql_on: ${purchase_orders.company} = ${purchase_order_lines.company}
        AND ${purchase_orders.order_no} = ${purchase_order_lines.order_no}
        AND ${purchase_orders.order_type} = ${purchase_order_lines.order_type}
        AND ${purchase_orders.order_suffix} = ${purchase_order_lines.order_suffix} ;;
  }
  join: suppliers {
    type: left_outer
    relationship: many_to_one
    sql_on: ${purchase_orders.supplier} = ${suppliers.address_number} ;;
  }
  join: cost_centers {
    type: left_outer
    relationship: many_to_one
    sql_on: ${purchase_orders.business_unit} = ${cost_centers.business_unit} ;;
  }
}

explore: load_log {
  label: "ml-connector loads"
  description: "One row per agent run that changed rows: when, which table, how many rows"
}
