# SPDX-License-Identifier: Apache-2.0
"""The JD Edwards finance flows into the PostgreSQL staging tables that the
Looker model in packaging/looker/ reads (issue 15): one definition, used by
the warehouse tests, `make demo` and `make bench`.

    cfg = {...}                                  # agent config with a "jde" system
    warehouse.add(cfg, pg_port, looker_url=None) # systems "warehouse" (+ "looker") and six flows
    warehouse.FLOWS                              # flow name -> (JD Edwards table, staging table)

Column names follow packaging/looker/README.md section 3. Amounts carry the
implied decimals JD Edwards stores (AG 123456 = 1234.56: "decimals" in the
mapping), dates come from the data service as yyyyMMdd text, business units
arrive padded and leave trimmed (the mapping trims every value).
"""

LOADER = "mlc_loader"
READER = "looker_reader"
PASSWORD_ENV = "MLC_PG_PASSWORD"
SCHEMA = "mlc_staging"


def _d(col):
    return {"from": col, "date": "yyyymmdd"}


def _n(col, places):
    return {"from": col, "decimals": places}


# flow -> (source, target table, key, columns, mapping)
DEFS = {
    "warehouse_ap_invoices": (
        {"table": "F0411", "key": ["KCO", "DOC", "DCT", "SFX"], "changed": {"date": "UPMJ", "time": "UPMT"}},
        "ap_invoices", ["company", "doc", "doc_type", "pay_item"],
        {"company": "text", "doc": "bigint", "doc_type": "text", "pay_item": "text", "supplier": "bigint",
         "supplier_invoice": "text", "invoice_date": "date", "gl_date": "date", "due_date": "date",
         "gross_amount": "numeric(15,2)", "open_amount": "numeric(15,2)", "currency": "text",
         "business_unit": "text", "gl_object": "text", "gl_subsidiary": "text", "pay_status": "text"},
        {"company": "{KCO}", "doc": "{DOC}", "doc_type": "{DCT}", "pay_item": "{SFX}", "supplier": "{AN8}",
         "supplier_invoice": "{VINV}", "invoice_date": _d("DIVJ"), "gl_date": _d("DGJ"), "due_date": _d("DDJ"),
         "gross_amount": _n("AG", 2), "open_amount": _n("AAP", 2), "currency": "{CRCD}",
         "business_unit": "{MCU}", "gl_object": "{OBJ}", "gl_subsidiary": "{SUB}", "pay_status": "{PST}"}),
    "warehouse_purchase_orders": (
        {"table": "F4301", "key": ["KCOO", "DOCO", "DCTO", "SFXO"], "changed": {"date": "UPMJ", "time": "UPMT"}},
        "purchase_orders", ["company", "order_no", "order_type", "order_suffix"],
        {"company": "text", "order_no": "bigint", "order_type": "text", "order_suffix": "text",
         "supplier": "bigint", "business_unit": "text", "order_date": "date", "requested_date": "date",
         "currency": "text", "order_amount": "numeric(15,2)", "buyer": "text"},
        {"company": "{KCOO}", "order_no": "{DOCO}", "order_type": "{DCTO}", "order_suffix": "{SFXO}",
         "supplier": "{AN8}", "business_unit": "{MCU}", "order_date": _d("TRDJ"), "requested_date": _d("DRQJ"),
         "currency": "{CRCD}", "order_amount": _n("OTOT", 2), "buyer": "{ORBY}"}),
    "warehouse_purchase_order_lines": (
        {"table": "F4311", "key": ["KCOO", "DOCO", "DCTO", "SFXO", "LNID"],
         "changed": {"date": "UPMJ", "time": "UPMT"}},
        "purchase_order_lines", ["company", "order_no", "order_type", "order_suffix", "line_no"],
        {"company": "text", "order_no": "bigint", "order_type": "text", "order_suffix": "text",
         "line_no": "numeric(7,3)", "item": "text", "description": "text", "business_unit": "text",
         "gl_object": "text", "gl_subsidiary": "text", "quantity": "numeric(15,0)",
         "unit_cost": "numeric(15,4)", "extended_amount": "numeric(15,2)", "requested_date": "date",
         "last_status": "text", "next_status": "text", "line_type": "text"},
        {"company": "{KCOO}", "order_no": "{DOCO}", "order_type": "{DCTO}", "order_suffix": "{SFXO}",
         "line_no": _n("LNID", 3), "item": "{LITM}", "description": "{DSC1}", "business_unit": "{MCU}",
         "gl_object": "{OBJ}", "gl_subsidiary": "{SUB}", "quantity": "{UORG}", "unit_cost": _n("PRRC", 4),
         "extended_amount": _n("AEXP", 2), "requested_date": _d("DRQJ"), "last_status": "{LTTR}",
         "next_status": "{NXTR}", "line_type": "{LNTY}"}),
    "warehouse_gl_accounts": (
        {"table": "F0901", "key": ["AID"], "changed": {"date": "UPMJ", "time": "UPMT"}},
        "gl_accounts", ["account_id"],
        {"account_id": "text", "company": "text", "business_unit": "text", "gl_object": "text",
         "gl_subsidiary": "text", "description": "text", "level_of_detail": "text", "posting_edit": "text"},
        {"account_id": "{AID}", "company": "{CO}", "business_unit": "{MCU}", "gl_object": "{OBJ}",
         "gl_subsidiary": "{SUB}", "description": "{DL01}", "level_of_detail": "{LDA}",
         "posting_edit": "{PEC}"}),
    "warehouse_cost_centers": (
        {"table": "F0006", "key": ["MCU"], "changed": {"date": "UPMJ", "time": "UPMT"}},
        "cost_centers", ["business_unit"],
        {"business_unit": "text", "description": "text", "company": "text", "bu_type": "text",
         "level_of_detail": "text"},
        {"business_unit": "{MCU}", "description": "{DL01}", "company": "{CO}", "bu_type": "{STYL}",
         "level_of_detail": "{LDM}"}),
    "warehouse_suppliers": (
        {"table": "F0101", "key": ["AN8"], "changed": {"date": "UPMJ", "time": "UPMT"},
         "filter": [{"column": "AT1", "op": "EQUAL", "values": ["V"]}]},
        "suppliers", ["address_number"],
        {"address_number": "bigint", "name": "text", "search_type": "text"},
        {"address_number": "{AN8}", "name": "{ALPH}", "search_type": "{AT1}"}),
}

FLOWS = {name: (d[0]["table"], d[1]) for name, d in DEFS.items()}


def add(cfg, pg_port, looker_url=None, dbname="mlc", page_size=None):
    """Add the warehouse (and Looker) systems and the six flows to cfg."""
    cfg["systems"]["warehouse"] = {
        "type": "pgsql", "dsn": f"host=127.0.0.1 port={pg_port} dbname={dbname} user={LOADER}",
        "password": "${%s}" % PASSWORD_ENV, "schema": SCHEMA, "reader_role": READER, "connect_timeout_s": 3}
    if looker_url is not None:
        cfg["systems"]["looker"] = {"type": "looker", "base_url": looker_url, "client_id": "mlc-looker",
                                    "client_secret": "${MLC_LOOKER_SECRET}"}
    for name, (src, table, key, columns, mapping) in DEFS.items():
        source = dict(src, system="jde")
        flow = {"source": source,
                "target": {"system": "warehouse", "table": table, "key": key, "columns": columns},
                "mapping": mapping, "schedule": "every 5m", "settle_after": "2s"}
        if looker_url is not None:
            flow["after_load"] = {"system": "looker", "model": "mlc_finance", "datagroup": "mlc_staging_load"}
        cfg["flows"][name] = flow
    if page_size is not None:
        cfg["systems"]["jde"]["page_size"] = page_size
    return cfg


def roles_sql(password):
    """What a DBA runs once: the loader (owns the staging schema) and the
    role Looker reads as."""
    return (f"CREATE ROLE {LOADER} LOGIN PASSWORD '{password}'; "
            f"GRANT CREATE ON DATABASE mlc TO {LOADER}; "
            f"CREATE ROLE {READER} NOLOGIN")
