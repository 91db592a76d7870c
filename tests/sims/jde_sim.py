#!/usr/bin/env python3
"""JD Edwards EnterpriseOne AIS server simulator (v2 REST, /jderest).

Token sessions, data-service BROWSE/COUNT/AGGREGATION over in-memory F4801,
F0101 and the finance tables F0411, F4301, F4311, F0901 and F0006, next-page cursors, the MLC_UpdateWOStatus, MLC_HoldWorkOrder,
MLC_UpdateWODates and MLC_UpdateWOPriority orchestrations (every call logged
for /_sim/orchestrations) and fault injection.  Behaviour follows docs/api/jde-ais.md; see tests/sims/README.md.
Standard library only.
"""

import datetime as dt
import random
import re
import secrets
import sys
import threading
import time

import simbase
from simbase import Reply, Route, control_json

# ---------------------------------------------------------------------------
# table catalogue: alias -> (label, type).  Types: num, str, date, mcu
# (mcu = right-justified business unit; compared with blanks stripped)

TABLES = {
    "F4801": {
        "title": "Work Order Master File",
        "key": "DOCO",
        "columns": [
            ("DOCO", "Order Number", "num"),
            ("DCTO", "Order Type", "str"),
            ("TYPS", "Type", "str"),
            ("PRTS", "Priority", "str"),
            ("DL01", "Description", "str"),
            ("SRST", "Status", "str"),
            ("MCU", "Business Unit", "mcu"),
            ("AN8", "Customer Number", "num"),
            ("ANP", "Assigned To", "num"),
            ("TRDJ", "Order Date", "date"),
            ("STRT", "Planned Start", "date"),
            ("DRQJ", "Requested Date", "date"),
            ("UPMJ", "Date Updated", "date"),
            ("TDAY", "Time of Day", "num"),
            ("USER", "User ID", "str"),
            ("PID", "Program ID", "str"),
            # category code 10 (UDC 00/W0): where the sim's MLC_HoldWorkOrder
            # records the hold code (F4801 has no documented hold column)
            ("WR10", "Category Code 10", "str"),
            # free-text references (blank when generated): tests put notes
            # here that a mapping turns into Jira comments
            ("VR01", "Reference", "str"),
            ("VR02", "Reference 2", "str"),
        ],
    },
    "F0101": {
        "title": "Address Book Master",
        "key": "AN8",
        "columns": [
            ("AN8", "Address Number", "num"),
            ("ALPH", "Alpha Name", "str"),
            ("AT1", "Sch Typ", "str"),
            ("UPMJ", "Date Updated", "date"),
            ("UPMT", "Time Last Updated", "num"),
        ],
    },
    # finance tables (issue 15).  Amounts are integers with implied decimals,
    # as JD Edwards stores them (the data dictionary's display decimals):
    # AG, AAP, OTOT, AEXP: 2; PRRC: 4; LNID: 3 (1000 = line 1.000); UORG: 0.
    "F0411": {
        "title": "Accounts Payable Ledger",
        "key": ("KCO", "DOC", "DCT", "SFX"),
        "columns": [
            ("KCO", "Document Company", "str"),
            ("DOC", "Document Number", "num"),
            ("DCT", "Document Type", "str"),
            ("SFX", "Pay Item", "str"),
            ("AN8", "Address Number", "num"),
            ("DIVJ", "Invoice Date", "date"),
            ("DGJ", "G/L Date", "date"),
            ("DDJ", "Net Due Date", "date"),
            ("PST", "Pay Status", "str"),
            ("AG", "Gross Amount", "num"),
            ("AAP", "Open Amount", "num"),
            ("CRCD", "Currency Code", "str"),
            ("VINV", "Supplier Invoice Number", "str"),
            ("CO", "Company", "str"),
            ("MCU", "Business Unit", "mcu"),
            ("OBJ", "Object Account", "str"),
            ("SUB", "Subsidiary", "str"),
            ("ICU", "Batch Number", "num"),
            ("UPMJ", "Date Updated", "date"),
            ("UPMT", "Time Last Updated", "num"),
            ("USER", "User ID", "str"),
            ("PID", "Program ID", "str"),
        ],
    },
    "F4301": {
        "title": "Purchase Order Header",
        "key": ("KCOO", "DOCO", "DCTO", "SFXO"),
        "columns": [
            ("KCOO", "Order Company", "str"),
            ("DOCO", "Order Number", "num"),
            ("DCTO", "Order Type", "str"),
            ("SFXO", "Order Suffix", "str"),
            ("MCU", "Business Unit", "mcu"),
            ("AN8", "Supplier", "num"),
            ("SHAN", "Ship To", "num"),
            ("TRDJ", "Order Date", "date"),
            ("DRQJ", "Requested Date", "date"),
            ("PDDJ", "Scheduled Pick Date", "date"),
            ("OTOT", "Order Total", "num"),
            ("CRCD", "Currency Code", "str"),
            ("ORBY", "Ordered By", "str"),
            ("UPMJ", "Date Updated", "date"),
            ("UPMT", "Time Last Updated", "num"),
            ("USER", "User ID", "str"),
            ("PID", "Program ID", "str"),
        ],
    },
    "F4311": {
        "title": "Purchase Order Detail File",
        "key": ("KCOO", "DOCO", "DCTO", "SFXO", "LNID"),
        "columns": [
            ("KCOO", "Order Company", "str"),
            ("DOCO", "Order Number", "num"),
            ("DCTO", "Order Type", "str"),
            ("SFXO", "Order Suffix", "str"),
            ("LNID", "Line Number", "num"),
            ("MCU", "Business Unit", "mcu"),
            ("AN8", "Supplier", "num"),
            ("ITM", "Short Item Number", "num"),
            ("LITM", "2nd Item Number", "str"),
            ("DSC1", "Description", "str"),
            ("LNTY", "Line Type", "str"),
            ("NXTR", "Status Code - Next", "str"),
            ("LTTR", "Status Code - Last", "str"),
            ("UORG", "Quantity Ordered", "num"),
            ("PRRC", "Unit Cost", "num"),
            ("AEXP", "Extended Price", "num"),
            ("OBJ", "Object Account", "str"),
            ("SUB", "Subsidiary", "str"),
            ("TRDJ", "Order Date", "date"),
            ("DRQJ", "Requested Date", "date"),
            ("UPMJ", "Date Updated", "date"),
            ("UPMT", "Time Last Updated", "num"),
            ("USER", "User ID", "str"),
            ("PID", "Program ID", "str"),
        ],
    },
    "F0901": {
        "title": "Account Master",
        "key": "AID",
        "columns": [
            ("AID", "Account ID", "str"),
            ("CO", "Company", "str"),
            ("MCU", "Business Unit", "mcu"),
            ("OBJ", "Object Account", "str"),
            ("SUB", "Subsidiary", "str"),
            ("DL01", "Description", "str"),
            ("LDA", "Level of Detail", "str"),
            ("PEC", "Posting Edit", "str"),
            ("UPMJ", "Date Updated", "date"),
            ("UPMT", "Time Last Updated", "num"),
        ],
    },
    "F0006": {
        "title": "Business Unit Master",
        "key": "MCU",
        "columns": [
            ("MCU", "Business Unit", "mcu"),
            ("STYL", "Business Unit Type", "str"),
            ("DL01", "Description", "str"),
            ("CO", "Company", "str"),
            ("LDM", "Level of Detail", "str"),
            ("UPMJ", "Date Updated", "date"),
            ("UPMT", "Time Last Updated", "num"),
        ],
    },
}
for _t in TABLES.values():
    _t["keys"] = tuple(_t["key"]) if isinstance(_t["key"], tuple) else (_t["key"],)
    _t["key"] = _t["keys"][0]  # the first key column (bad_row, single-key lookups)
    _t["time"] = "TDAY" if "TDAY" in [a for a, _l, _ty in _t["columns"]] else "UPMT"
    _t["types"] = {a: ty for a, _l, ty in _t["columns"]}
    _t["labels"] = {a: l for a, l, _ty in _t["columns"]}
    _t["order"] = [a for a, _l, _ty in _t["columns"]]

VALID_SRST = {"10", "20", "30", "40", "45", "50", "60", "70", "80", "90", "91", "95", "97", "98", "99"}
VALID_PRTS = {"1", "2", "3", "4", "5"}  # the sim's UDC 00/PR (the priorities it generates)

PEOPLE = [
    (6001, "Lopez, Maria"), (6002, "Chen, James"), (6003, "Patel, Aisha"), (6004, "Nowak, Tomasz"),
    (6005, "Rossi, Sofia"), (6006, "Mensah, Kwame"), (6007, "Fischer, Lena"), (6008, "Iyer, Raj"),
]
CUSTOMERS = [
    (4001, "Acme Fabrication Inc"), (4002, "Northwind Plastics"), (4003, "Globex Motors"),
    (4004, "Initech Tooling"), (4005, "Umbrella Packaging"), (4006, "Stark Hydraulics"),
    (4007, "Wayne Foundry"), (4008, "Cyberdyne Controls"), (4009, "Soylent Foods"),
    (4010, "Tyrell Assemblies"),
]
SERVICE_USER = (4242, "Sync, Service")

VERBS = ["Replace", "Inspect", "Repair", "Calibrate", "Lubricate", "Rebuild", "Align", "Clean",
         "Adjust", "Test", "Overhaul", "Install", "Tighten", "Weld"]
THINGS = ["pump seal", "conveyor belt", "hydraulic hose", "gearbox", "spindle bearing", "servo motor",
          "coolant filter", "press die", "torque sensor", "air compressor", "drive chain", "PLC module",
          "weld tip", "boiler valve", "guard switch"]
PLACES = ["line 3", "cell 7", "press 2", "bay 4", "oven 1", "Line A", "mixer 5", "CNC 12", "dock 2"]
ECO_TEXT = ["ECO revise bracket drawing", "ECO update BOM housing", "ECO change torque spec",
            "ECO new supplier for gasket", "ECO reroute paint step", "ECO remove obsolete part"]
ODD_TEXT = ['Check 3/4" valve & gasket', "Ersatz Dichtung Prüfstand 2", "Fix <guard> / reset E-stop",
            "Réparer pompe ligne 3", "Tab\tin description"]
USERS = ["JDEUSER", "PRODPLN", "MAINT01", "SCHED02"]
BUS = ["M30", "M40", "M10", "D30"]

# finance data (issue 15)
COMPANIES = [("00001", "USD"), ("00050", "EUR"), ("00200", "CAD")]
BU_NAMES = ["Finance", "Procurement", "Plant Maintenance", "Logistics", "IT Services", "Quality",
            "Facilities", "Sales Ops", "Engineering", "HR Shared Services", "Tooling", "Warehouse"]
# object accounts: (object, description); expense and inventory accounts a voucher or PO line hits
OBJECTS = [("1410", "Inventory - Raw Material"), ("6110", "Office Supplies"), ("6120", "Tools & Small Parts"),
           ("6210", "Travel & Lodging"), ("6310", "Utilities"), ("6410", "Repairs & Maintenance"),
           ("6510", "Freight In"), ("6610", "Contract Services"), ("6710", "Software Licences"),
           ("6810", "Safety Equipment")]
SUPPLIER_A = ["Apex", "Baltic", "Cedar", "Delta", "Evergreen", "Falcon", "Granite", "Harbor", "Iron Gate",
              "Juniper", "Keystone", "Lakeside", "Meridian", "Northstar", "Orion", "Pinnacle", "Quarry",
              "Redwood", "Summit", "Tidewater"]
SUPPLIER_B = ["Industrial Supply", "Freight", "Fasteners", "Electric", "Hydraulics", "Office Products",
              "Packaging", "Tooling", "Safety", "Software", "Chemicals", "Logistics"]
SUPPLIER_C = ["Inc", "LLC", "GmbH", "Ltd", "S.A.", "Corp"]
SUPPLIER_ODD = ["Müller & Söhne GmbH", "O'Brien Fasteners Ltd", "Société Générale d'Outillage",
                "Kowalski \"Best\" Parts", "Łódź Metalworks Sp. z o.o."]
ITEMS = [("BOLT-M8X40", "Hex bolt M8 x 40 zinc"), ("NUT-M8", "Hex nut M8"), ("GLOVE-NIT-L", "Nitrile gloves L"),
         ("FILTER-HY10", "Hydraulic filter 10 micron"), ("BELT-V-A42", "V-belt A42"),
         ("PAPER-A4-80", "Copy paper A4 80g"), ("TONER-HP26", "Toner cartridge 26X"),
         ("BEARING-6204", "Ball bearing 6204-2RS"), ("SEAL-KIT-P3", "Pump seal kit P3"),
         ("CABLE-CAT6", "Network cable Cat6 305m"), ("LUBE-EP2", "EP2 grease cartridge"),
         ("VALVE-BALL-1", "Ball valve 1 inch"), ("HELMET-W", "Safety helmet white"),
         ("PALLET-EUR", "Euro pallet"), ("LIC-CAD-1Y", "CAD licence 1 year")]
BUYERS = ["PURCH01", "PURCH02", "BUYERJS", "BUYERMK"]
AP_USERS = ["APCLERK1", "APCLERK2", "APBATCH"]
# (last status, next status) of the order activity rules a PO line moves through
PO_STATUS = [("220", "230"), ("230", "280"), ("280", "400"), ("400", "999")]

SIM_START = time.monotonic()


def ts_error():
    """timeStamp of error bodies, e.g. 2025-09-19T20:16:27.934+0000 (UTC)."""
    n = dt.datetime.now(dt.timezone.utc)
    return n.strftime("%Y-%m-%dT%H:%M:%S.") + "%03d+0000" % (n.microsecond // 1000)


def pad(s, n):
    return (s + " " * n)[:n] if len(s) < n else s


def ymd(d):
    return d.strftime("%Y%m%d")


def julian(yyyymmdd):
    """yyyyMMdd text -> JD Edwards Julian CYYDDD (2024-01-15 -> 124015); "" -> 0."""
    if not yyyymmdd:
        return 0
    d = dt.datetime.strptime(yyyymmdd, "%Y%m%d").date()
    return (d.year - 1900) * 1000 + d.timetuple().tm_yday


def parse_tz(s):
    m = re.fullmatch(r"([+-])(\d{1,2}):?(\d{2})", s.strip())
    if not m:
        raise ValueError("bad --tz-offset %r (use +HH:MM / -HH:MM)" % s)
    sign = -1 if m.group(1) == "-" else 1
    return dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3))) * sign


class JdeSim(simbase.Sim):
    """JD Edwards AIS v2 simulator"""

    name = "jde"

    @staticmethod
    def add_args(p):
        p.add_argument("--seed", type=int, default=300, help="number of F4801 work orders to generate")
        p.add_argument("--rng-seed", type=int, default=42, help="random seed for data generation and touch")
        p.add_argument("--user", default="SYNCUSR")
        p.add_argument("--password", default="demo-pass")
        p.add_argument("--environment", default="JDV920", help="the only valid environment")
        p.add_argument("--role", default="*ALL")
        p.add_argument("--token-ttl", type=float, default=1500.0, help="token lifetime in seconds")
        p.add_argument("--allow-basic", action="store_true",
                       help="accept per-request Basic auth on dataservice/orchestrator")
        p.add_argument("--tz-offset", default="+00:00",
                       help="server-local time offset used for UPMJ/TDAY and timeZoneOffset")
        p.add_argument("--dates", choices=("yyyymmdd", "julian"), default="yyyymmdd",
                       help="how rowsets carry date columns: yyyyMMdd text (what AIS sends, the "
                            "default) or Julian CYYDDD numbers (as the tables store them)")
        p.add_argument("--ap-invoices", type=int, default=200, help="F0411 AP ledger rows (pay items)")
        p.add_argument("--pos", type=int, default=40, help="F4301 purchase order headers")
        p.add_argument("--po-lines-per-po", type=int, default=3, help="F4311 lines per purchase order")
        p.add_argument("--accounts", type=int, default=60, help="F0901 accounts")
        p.add_argument("--business-units", type=int, default=10, help="F0006 business units (at least 4)")
        p.add_argument("--suppliers", type=int, default=25, help="suppliers (AT1 V) added to F0101")

    def __init__(self, args):
        super().__init__(args)
        self.tz = parse_tz(args.tz_offset)
        self.lock = threading.RLock()
        self.tokens = {}
        self.tables = {}
        self.index = {}
        self.orch_log = []  # one entry per orchestration call that passed auth
        self.sizes = self.finance_sizes()
        self.generate(args.seed, args.rng_seed)

    # ------------------------------------------------------------------
    # data

    def local_now(self):
        return (dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + self.tz).replace(microsecond=0)

    def generate(self, count, rng_seed):
        rng = random.Random(rng_seed)
        today = self.local_now().date()
        people = [p[0] for p in PEOPLE]
        custs = [c[0] for c in CUSTOMERS]
        # busy days share many UPMJ values; batch stamps share (UPMJ, TDAY)
        busy_days = rng.sample(range(1, 61), 8)
        stamp_count = max(3, count // 25)
        stamps = []
        for _ in range(stamp_count):
            day = rng.choice(busy_days) if rng.random() < 0.7 else rng.randint(1, 60)
            hh = rng.choice([0, 2, 5, 9, 12, 17, 23])
            stamps.append((day, hh * 10000 + rng.choice([0, 15, 30, 45]) * 100 + rng.choice([0, 15, 30])))
        rows = []
        for i in range(count):
            doco = 100001 + i
            r = rng.random()
            dcto = "EN" if r < 0.10 else ("WM" if r < 0.25 else "WO")
            if dcto == "EN":
                dl01 = rng.choice(ECO_TEXT)
            elif rng.random() < 0.03:
                dl01 = rng.choice(ODD_TEXT)
            else:
                dl01 = "%s %s %s" % (rng.choice(VERBS), rng.choice(THINGS), rng.choice(PLACES))
            dl01 = dl01[:30]
            x = rng.random()
            if x < 0.30:
                days_ago, tday = rng.choice(stamps)
            else:
                days_ago = rng.choice(busy_days) if x < 0.65 else rng.randint(1, 60)
                tday = rng.randint(0, 23) * 10000 + rng.randint(0, 59) * 100 + rng.randint(0, 59)
            upmj = today - dt.timedelta(days=days_ago)
            trdj = upmj - dt.timedelta(days=rng.randint(0, 30))
            strt = trdj + dt.timedelta(days=rng.randint(0, 10))
            drqj = strt + dt.timedelta(days=rng.randint(1, 20))
            rows.append({
                "DOCO": doco,
                "DCTO": dcto,
                "TYPS": rng.choice("12345"),
                "PRTS": rng.choice("12345"),
                "DL01": dl01,
                "SRST": rng.choices(["10", "30", "40", "45", "90"], [3, 3, 4, 2, 2])[0],
                "MCU": rng.choice(BUS).rjust(12),
                "AN8": rng.choice(custs),
                "ANP": rng.choice(people),
                "TRDJ": ymd(trdj),
                "STRT": ymd(strt),
                "DRQJ": ymd(drqj),
                "UPMJ": ymd(upmj),
                "TDAY": tday,
                "USER": pad(rng.choice(USERS), 10),
                "PID": "P48013",
                "WR10": "   ",
                "VR01": "",
                "VR02": "",
            })
        old = ymd(today - dt.timedelta(days=90))
        ab = [{"AN8": a, "ALPH": n, "AT1": "E", "UPMJ": old, "UPMT": 80000} for a, n in PEOPLE]
        ab += [{"AN8": a, "ALPH": n, "AT1": "C", "UPMJ": old, "UPMT": 80000} for a, n in CUSTOMERS]
        ab.append({"AN8": SERVICE_USER[0], "ALPH": SERVICE_USER[1], "AT1": "E", "UPMJ": old, "UPMT": 80000})
        tables = {"F4801": rows, "F0101": ab}
        self.generate_finance(tables, rng_seed, today)
        for tname, rs in tables.items():
            rs.sort(key=lambda r, t=tname: self.key_sort(t, r))
        with self.lock:
            self.tables = tables
            self.index = {t: {self.row_key(t, r): r for r in rs} for t, rs in tables.items()}
            self.touch_rng = random.Random(rng_seed + 1)
            self.revs = {}
            last = None
            for tname, rs in tables.items():
                tc = TABLES[tname]["time"]
                for r in rs:
                    k = (r["UPMJ"], r[tc])
                    if last is None or k > last:
                        last = k
            self.clock_last = self.stamp_to_dt(last) if last else None

    # ------------------------------------------------------------------
    # keys

    @staticmethod
    def row_key(tname, r):
        """A row's key as the index holds it: the value itself for a one-column
        key (a business unit without its padding), else the key columns'
        values, blanks stripped, joined with '|' ("00001|10000001|PV|001")."""
        t = TABLES[tname]
        if len(t["keys"]) == 1:
            v = r[t["key"]]
            return v.strip() if isinstance(v, str) else v
        return "|".join(str(r[k]).strip() for k in t["keys"])

    @staticmethod
    def key_sort(tname, r):
        t = TABLES[tname]
        return tuple(r[k].strip() if isinstance(r[k], str) else r[k] for k in t["keys"])

    def lookup(self, tname, key):
        """The row of tname whose key (as row_key gives it, in text) is key, or None."""
        t = TABLES[tname]
        key = str(key).strip()
        if len(t["keys"]) == 1 and t["types"][t["key"]] == "num":
            try:
                return self.index[tname].get(int(key))
            except ValueError:
                return None
        return self.index[tname].get(key)

    # ------------------------------------------------------------------
    # finance data

    def finance_sizes(self):
        a = self.args
        return {"ap_invoices": a.ap_invoices, "pos": a.pos, "po_lines_per_po": a.po_lines_per_po,
                "accounts": a.accounts, "business_units": a.business_units, "suppliers": a.suppliers}

    def generate_finance(self, tables, rng_seed, today):
        """F0006, F0901, suppliers in F0101, F0411, F4301 and F4311 with joins
        that hold: a voucher's or PO's AN8 is a supplier (AT1 V), its MCU is in
        F0006, its MCU/OBJ/SUB is an F0901 account."""
        sz = self.sizes
        rng = random.Random(rng_seed * 7919 + 15)
        # business units: the four F4801 uses, then numbered cost centres
        bus = []
        for i in range(max(4, sz["business_units"])):
            code = BUS[i] if i < len(BUS) else str(1000 + 100 * (i - len(BUS) + 1))
            co, _cur = COMPANIES[i % len(COMPANIES)]
            styl = "BP" if i < len(BUS) else ("IS" if i % 5 else "BS")
            name = ("Branch Plant %s" % code) if styl == "BP" else \
                "%s %s" % (BU_NAMES[i % len(BU_NAMES)], code)
            u, t = self.old_stamp(rng, today)
            bus.append({"MCU": code.rjust(12), "STYL": styl, "DL01": name[:30], "CO": co,
                        "LDM": "5" if styl == "BP" else "7", "UPMJ": u, "UPMT": t})
        tables["F0006"] = bus
        # accounts: BU x object account, then the same again with subsidiaries
        accts = []
        nb, no = len(bus), len(OBJECTS)
        for i in range(max(1, sz["accounts"])):
            bu = bus[i % nb]
            obj, odesc = OBJECTS[(i // nb) % no]
            k = i // (nb * no)
            sub = "" if k == 0 else "%04d" % k
            u, t = self.old_stamp(rng, today)
            pec = "N" if (i % 37 == 36) else " "  # a few non-posting accounts
            accts.append({"AID": "%08d" % (1000 + i), "CO": bu["CO"], "MCU": bu["MCU"], "OBJ": obj.ljust(6),
                          "SUB": sub.ljust(8), "DL01": ("%s %s" % (odesc, sub)).strip()[:30],
                          "LDA": "7" if sub else "6", "PEC": pec, "UPMJ": u, "UPMT": t})
        tables["F0901"] = accts
        posting = [a for a in accts if a["PEC"] == " "] or accts
        by_mcu = {}
        for a in posting:
            by_mcu.setdefault(a["MCU"], []).append(a)
        currency = dict(COMPANIES)
        # suppliers (AT1 V) in the address book
        sups = []
        for i in range(max(1, sz["suppliers"])):
            if i % 40 == 7:
                name = SUPPLIER_ODD[(i // 40) % len(SUPPLIER_ODD)]
            else:
                name = "%s %s %s" % (SUPPLIER_A[i % len(SUPPLIER_A)],
                                     SUPPLIER_B[(i // len(SUPPLIER_A)) % len(SUPPLIER_B)],
                                     SUPPLIER_C[i % len(SUPPLIER_C)])
                if i >= len(SUPPLIER_A) * len(SUPPLIER_B):
                    name += " %d" % (i // (len(SUPPLIER_A) * len(SUPPLIER_B)) + 1)
            u, t = self.old_stamp(rng, today)
            sups.append({"AN8": 700001 + i, "ALPH": name[:40], "AT1": "V", "UPMJ": u, "UPMT": t})
        tables["F0101"].extend(sups)
        sup_ids = [x["AN8"] for x in sups]
        busy = rng.sample(range(1, 61), 8)

        def day(busy_share=0.7):
            return rng.choice(busy) if rng.random() < busy_share else rng.randint(1, 60)

        def hms():
            return rng.randint(0, 23) * 10000 + rng.randint(0, 59) * 100 + rng.randint(0, 59)

        # AP vouchers: batches of documents entered together share (UPMJ, UPMT);
        # some pay items were paid or changed later, on the same day or after
        ap = []
        doc = 10000000
        batch = 0
        n = max(0, sz["ap_invoices"])
        while len(ap) < n:
            batch += 1
            bday = day()
            bstamp = (ymd(today - dt.timedelta(days=bday)), hms())
            user = pad(rng.choice(AP_USERS), 10)
            for _d in range(rng.randint(1, 120)):
                if len(ap) >= n:
                    break
                doc += 1
                acct = rng.choice(posting)
                co = acct["CO"]
                r = rng.random()
                dct = "PV" if r < 0.85 else ("PD" if r < 0.95 else "PL")
                an8 = rng.choice(sup_ids)
                divj = today - dt.timedelta(days=bday + rng.randint(0, 30))
                dgj = divj + dt.timedelta(days=rng.randint(0, 5))
                terms = rng.choice([30, 30, 45, 60])
                vinv = "INV-%06d" % rng.randint(1, 999999) if rng.random() < 0.9 else ""
                for sfx in range(1, min(n - len(ap), rng.choice([1, 1, 1, 2, 3])) + 1):
                    ag = rng.randint(1000, 5000000)
                    if rng.random() < 0.02:
                        ag = rng.choice([1, 99, 100, 999999999])  # cents, round and huge amounts
                    if dct == "PD":
                        ag = -ag  # a debit memo reduces what is owed
                    pst = rng.choices(["A", "P", "H"], [6, 3, 1])[0]
                    # open: all of it, or half (never 0 while open, so paying it changes AAP)
                    aap = 0 if pst == "P" else (ag if rng.random() < 0.8 or abs(ag) < 2 else ag // 2)
                    upmj, upmt = bstamp
                    if rng.random() < 0.25:  # changed after entry (payment, hold release)
                        later = max(0, bday - rng.randint(0, 3))
                        upmj, upmt = ymd(today - dt.timedelta(days=max(1, later))), hms()
                    ap.append({
                        "KCO": co, "DOC": doc, "DCT": dct, "SFX": "%03d" % sfx, "AN8": an8,
                        "DIVJ": ymd(divj), "DGJ": ymd(dgj), "DDJ": ymd(divj + dt.timedelta(days=terms)),
                        "PST": pst, "AG": ag, "AAP": aap, "CRCD": currency[co], "VINV": vinv, "CO": co,
                        "MCU": acct["MCU"], "OBJ": acct["OBJ"], "SUB": acct["SUB"], "ICU": 50000 + batch,
                        "UPMJ": upmj, "UPMT": upmt, "USER": user, "PID": "P0411",
                    })
        tables["F0411"] = ap
        # purchase orders and their lines
        heads, lines = [], []
        per = max(0, sz["po_lines_per_po"])
        for i in range(max(0, sz["pos"])):
            acct = rng.choice(posting)
            co = acct["CO"]
            d = day()
            trdj = today - dt.timedelta(days=d + rng.randint(0, 20))
            drqj = trdj + dt.timedelta(days=rng.randint(7, 30))
            stamp = (ymd(today - dt.timedelta(days=d)), hms())
            an8 = rng.choice(sup_ids)
            buyer = pad(rng.choice(BUYERS), 10)
            h = {"KCOO": co, "DOCO": 4000001 + i, "DCTO": "OP", "SFXO": "000", "MCU": acct["MCU"],
                 "AN8": an8, "SHAN": int(co), "TRDJ": ymd(trdj), "DRQJ": ymd(drqj),
                 "PDDJ": "" if rng.random() < 0.1 else ymd(drqj - dt.timedelta(days=rng.randint(1, 3))),
                 "OTOT": 0, "CRCD": currency[co], "ORBY": buyer, "UPMJ": stamp[0], "UPMT": stamp[1],
                 "USER": buyer, "PID": "P4310"}
            total = 0
            for ln in range(1, per + 1):
                la = rng.choice(by_mcu.get(acct["MCU"], [acct]))
                litm, dsc = rng.choice(ITEMS)
                uorg = rng.randint(1, 500)
                prrc = rng.randint(1, 50000) * 100  # 4 implied decimals, whole cents (up to 500.00)
                aexp = uorg * prrc // 100
                total += aexp
                lt, nx = rng.choice(PO_STATUS)
                lu, lt_time = stamp
                if rng.random() < 0.3:  # received or changed later
                    ld = max(1, d - rng.randint(0, 5))
                    lu, lt_time = ymd(today - dt.timedelta(days=ld)), hms()
                lines.append({"KCOO": co, "DOCO": h["DOCO"], "DCTO": "OP", "SFXO": "000", "LNID": ln * 1000,
                              "MCU": acct["MCU"], "AN8": an8, "ITM": 60001 + ITEMS.index((litm, dsc)),
                              "LITM": litm.ljust(25), "DSC1": dsc, "LNTY": "S" if rng.random() < 0.7 else "N",
                              "NXTR": nx, "LTTR": lt, "UORG": uorg, "PRRC": prrc, "AEXP": aexp,
                              "OBJ": la["OBJ"], "SUB": la["SUB"], "TRDJ": h["TRDJ"], "DRQJ": h["DRQJ"],
                              "UPMJ": lu, "UPMT": lt_time, "USER": buyer, "PID": "P4310"})
            h["OTOT"] = total
            heads.append(h)
        tables["F4301"] = heads
        tables["F4311"] = lines

    def touch_row(self, tname, r):
        """What /_sim/touch changes in a row besides its stamp: always a real
        change of content (caller holds the lock)."""
        if tname == "F0411":
            if r["PST"] == "P":  # a voided payment reopens the item
                r["PST"], r["AAP"] = "A", r["AG"]
            else:  # paid
                r["PST"], r["AAP"] = "P", 0
            return
        if tname == "F4301":
            d = dt.datetime.strptime(r["DRQJ"], "%Y%m%d") + dt.timedelta(days=1)
            r["DRQJ"] = ymd(d)
            return
        if tname == "F4311":
            r["UORG"] += 1
            r["AEXP"] = r["UORG"] * r["PRRC"] // 100
            return
        col, width = {"F4801": ("DL01", 30), "F0901": ("DL01", 30), "F0006": ("DL01", 30),
                      "F0101": ("ALPH", 40)}[tname]
        k = self.revs.get((tname, self.row_key(tname, r)), 0) + 1
        self.revs[(tname, self.row_key(tname, r))] = k
        base = re.sub(r" \(rev \d+\)$", "", r[col].rstrip())
        suffix = " (rev %d)" % k
        r[col] = base[:width - len(suffix)] + suffix

    @staticmethod
    def old_stamp(rng, today):
        """A master-data stamp: 61-400 days ago (older than any transaction)."""
        d = today - dt.timedelta(days=rng.randint(61, 400))
        return ymd(d), rng.randint(0, 23) * 10000 + rng.randint(0, 59) * 100 + rng.randint(0, 59)

    @staticmethod
    def stamp_to_dt(k):
        upmj, tday = k
        d = dt.datetime.strptime(upmj, "%Y%m%d")
        return d + dt.timedelta(hours=tday // 10000, minutes=(tday // 100) % 100, seconds=tday % 100)

    def tick(self):
        """Next modification stamp: strictly after every stamp handed out or
        present in the table (caller holds self.lock)."""
        now = self.local_now()
        if self.clock_last is not None and now <= self.clock_last:
            now = self.clock_last + dt.timedelta(seconds=1)
        self.clock_last = now
        return ymd(now), now.hour * 10000 + now.minute * 100 + now.second

    # ------------------------------------------------------------------
    # error shapes

    def error_body(self, status, message):
        return {"message": message, "exception": "JDERestServiceException",
                "timeStamp": ts_error(), "status": "ERROR"}

    def svc_error(self, status, message, **extra):
        body = self.error_body(status, message)
        body.update(extra)
        return Reply(status, body)

    def auth_failure(self, detail):
        return Reply(403, {"message": "Authorization Failure", "exception": detail,
                           "timeStamp": ts_error()})

    def invalid_token(self):
        status = int(self.fault_num("expired_status", 444))
        return Reply(status, {"message": "Invalid Token", "exception": "Exception",
                              "timeStamp": ts_error()})

    def require_json(self, h, optional):
        """415 unless the body is declared JSON.  With optional=True an empty
        body without Content-Type is accepted."""
        if h.header("Content-Type") is not None:
            if not h.is_json_ct():
                raise self.svc_error(415, "Unsupported Media Type: Content-Type must be application/json")
            return
        if optional and not h.body.strip():
            return
        raise self.svc_error(415, "Unsupported Media Type: Content-Type must be application/json")

    def body_obj(self, h, optional):
        b = h.json_body(optional=optional)
        if not isinstance(b, dict):
            raise self.svc_error(400, "Request body must be a JSON object")
        return b

    # ------------------------------------------------------------------
    # auth

    def check_creds(self, user, pw):
        return (isinstance(user, str) and isinstance(pw, str)
                and user.upper() == self.args.user.upper() and pw == self.args.password)

    def token_ttl(self):
        return self.fault_num("token_ttl", self.args.token_ttl)

    def lookup_token(self, token, device, h, consume_fault=True):
        """Return the live session for token, or raise the invalid-token reply."""
        with self.lock:
            if consume_fault and self.take("force_444"):
                self.tokens.pop(token, None)
                r = self.invalid_token()
                r.note = "fault=force_444"
                raise r
            rec = self.tokens.get(token)
            if rec is None:
                raise self.invalid_token()
            if time.monotonic() >= rec["base"] + self.token_ttl():
                del self.tokens[token]
                raise self.invalid_token()
            if rec["device"] is not None:
                if device != rec["device"]:
                    raise self.invalid_token()
            elif rec["ip"] != h.client_ip:
                raise self.invalid_token()
            return rec

    def session(self, h, body):
        """('token', rec) or ('basic', None); raises 403/444 replies."""
        token = h.header("jde-AIS-Auth") or body.get("token")
        if token:
            device = h.header("jde-AIS-Auth-Device") or body.get("deviceName")
            return "token", self.lookup_token(token, device, h)
        ba = h.basic_auth()
        if ba is not None:
            if not self.args.allow_basic:
                raise self.auth_failure("Basic authentication is not enabled on this AIS server")
            if not self.check_creds(*ba):
                raise self.auth_failure("Invalid user name or password")
            env = h.header("jde-AIS-Auth-Environment") or self.args.environment
            if env.upper() != self.args.environment.upper():
                raise Reply(403, {"message": "Invalid environment %s" % env,
                                  "exception": "JDERestServiceException", "timeStamp": ts_error()})
            return "basic", None
        raise self.auth_failure("No token or credentials supplied")

    # ------------------------------------------------------------------
    # routing

    def route(self, method, path, h):
        p = path.rstrip("/")
        if method == "POST":
            if p in ("/jderest/v2/tokenrequest", "/jderest/tokenrequest"):
                return Route("tokenrequest", lambda: self.h_tokenrequest(h))
            if p in ("/jderest/v2/tokenrequest/validate", "/jderest/tokenrequest/validate"):
                return Route("validate", lambda: self.h_validate(h))
            if p in ("/jderest/v2/tokenrequest/logout", "/jderest/tokenrequest/logout"):
                return Route("logout", lambda: self.h_logout(h))
            if p == "/jderest/v2/dataservice":
                return Route("dataservice", lambda: self.h_dataservice(h, True))
            if p == "/jderest/dataservice":
                return Route("dataservice", lambda: self.h_dataservice(h, False))
            if p == "/jderest/v2/dataservice/next":
                return Route("next", lambda: self.h_next(h))
            m = re.fullmatch(r"/jderest/(?:v[23]/)?orchestrator/([^/]+)", p)
            if m:
                name = m.group(1)
                if name == "jde-validate-session":
                    return Route("validate", lambda: self.h_validate(h))
                return Route("orchestrator", lambda: self.h_orchestrator(h, name), write=True)
        if method == "GET" and p in ("/jderest/defaultconfig", "/jderest/v2/defaultconfig"):
            return Route("defaultconfig", lambda: self.h_defaultconfig())
        return None

    # ------------------------------------------------------------------
    # token service

    def h_defaultconfig(self):
        return Reply(200, {
            "jasHost": "127.0.0.1", "jasPort": str(self.port), "jasProtocol": "http",
            "defaultEnvironment": self.args.environment, "defaultRole": self.args.role,
            "aisVersion": "simulated", "keepJasSessionOpen": True,
            "capabilityList": [
                {"name": "nextPage", "shortDescription": "Next Page", "asOfRelease": "9.2.1.2", "sinceVersion": "v2"},
                {"name": "dataServiceAggregation", "shortDescription": "Aggregation", "asOfRelease": "9.2.1.0",
                 "sinceVersion": "v1"},
                {"name": "orchestrator", "shortDescription": "Orchestrator", "asOfRelease": "9.2.0.0",
                 "sinceVersion": "v1"},
            ]})

    def h_tokenrequest(self, h):
        self.require_json(h, optional=True)
        body = self.body_obj(h, optional=True)
        user, pw = body.get("username"), body.get("password")
        if user is None and pw is None:
            ba = h.basic_auth()
            if ba is not None:
                user, pw = ba
        env = body.get("environment") or h.header("jde-AIS-Auth-Environment") or self.args.environment
        role = body.get("role") or h.header("jde-AIS-Auth-Role") or self.args.role
        device = body.get("deviceName") or h.header("jde-AIS-Auth-Device")
        if not self.check_creds(user, pw):
            raise self.auth_failure("Invalid user name or password")
        if not isinstance(env, str) or env.upper() != self.args.environment.upper():
            raise Reply(403, {"message": "Invalid environment %s" % env,
                              "exception": "JDERestServiceException", "timeStamp": ts_error()})
        if not isinstance(role, str) or role.upper() != self.args.role.upper():
            raise Reply(403, {"message": "Invalid role %s" % role,
                              "exception": "JDERestServiceException", "timeStamp": ts_error()})
        token = "044" + secrets.token_urlsafe(48)
        with self.lock:
            self.tokens[token] = {"token": token, "device": device if device else None,
                                  "ip": h.client_ip, "base": time.monotonic(),
                                  "issued": time.time(), "cursor": None,
                                  "user": self.args.user.upper()}
        off = self.tz
        sign = "-" if off < dt.timedelta(0) else "+"
        mins = abs(int(off.total_seconds())) // 60
        return Reply(200, {
            "username": self.args.user.upper(),
            "environment": self.args.environment,
            "role": self.args.role,
            "jasserver": "http://127.0.0.1:%d" % self.port,
            "userInfo": {
                "token": token, "langPref": "  ", "locale": "en",
                "dateFormat": "MDE", "dateSeperator": "/", "simpleDateFormat": "MM/dd/yyyy",
                "decimalFormat": ".", "addressNumber": SERVICE_USER[0], "alphaName": SERVICE_USER[1],
                "appsRelease": "E920", "country": " ",
                "timeZoneOffset": "UTC%s%02d:%02d" % (sign, mins // 60, mins % 60),
            },
            "userAuthorized": False,
            "aisSessionCookie": "%s!%d" % (secrets.token_urlsafe(24), int(time.time() * 1000)),
            "adminAuthorized": False,
        })

    def h_validate(self, h):
        self.require_json(h, optional=True)
        body = self.body_obj(h, optional=True)
        token = body.get("token") or h.header("jde-AIS-Auth")
        device = body.get("deviceName") or h.header("jde-AIS-Auth-Device")
        if not token:
            raise self.invalid_token()
        rec = self.lookup_token(token, device, h)
        if body.get("touch") in (True, "true", "TRUE"):
            with self.lock:
                rec["base"] = time.monotonic()
        return Reply(200, {"isValidSession": True})

    def h_logout(self, h):
        self.require_json(h, optional=True)
        body = self.body_obj(h, optional=True)
        token = body.get("token") or h.header("jde-AIS-Auth")
        device = body.get("deviceName") or h.header("jde-AIS-Auth-Device")
        if not token:
            raise self.invalid_token()
        self.lookup_token(token, device, h, consume_fault=False)
        with self.lock:
            self.tokens.pop(token, None)
        return Reply(200, {})

    # ------------------------------------------------------------------
    # query compilation

    def resolve_col(self, tname, cid, what):
        t = TABLES[tname]
        s = str(cid or "").strip()
        if "." in s:
            pre, _, alias = s.partition(".")
            ok = pre.upper() == tname
        else:
            alias, ok = s, True
        alias = alias.upper()
        if not ok or alias not in t["types"]:
            raise self.svc_error(400, "Invalid column %s in %s: not a column of table %s" % (s, what, tname))
        return alias, t["types"][alias]

    def literal(self, tname, alias, ctype, v, login_user):
        if not isinstance(v, dict):
            raise self.svc_error(400, "Invalid condition value for %s.%s: expected an object" % (tname, alias))
        sid = str(v.get("specialValueId") or "LITERAL").upper()
        content = v.get("content")
        if sid == "LITERAL":
            s = "" if content is None else str(content)
        elif sid == "LOGIN_USER":
            s = login_user
        elif sid == "TODAY" or sid.startswith("TODAY_"):
            if ctype != "date":
                raise self.svc_error(400, "Special value %s is only valid for date columns (%s.%s)"
                                     % (sid, tname, alias))
            base = self.local_now().date()
            m = re.fullmatch(r"TODAY(?:_(MINUS|PLUS)_(DAY|MONTH|YEAR))?", sid)
            if not m:
                raise self.svc_error(400, "Unknown specialValueId %s" % sid)
            if m.group(1):
                try:
                    n = int(str(content or "0").strip() or "0")
                except ValueError:
                    raise self.svc_error(400, "Invalid offset '%s' for %s" % (content, sid))
                if m.group(1) == "MINUS":
                    n = -n
                if m.group(2) == "DAY":
                    base = base + dt.timedelta(days=n)
                else:
                    months = n * (12 if m.group(2) == "YEAR" else 1)
                    y, mo = divmod(base.month - 1 + months, 12)
                    year = base.year + y
                    month = mo + 1
                    day = base.day
                    while True:
                        try:
                            base = dt.date(year, month, day)
                            break
                        except ValueError:
                            day -= 1
            return ymd(base)
        else:
            raise self.svc_error(400, "Unknown specialValueId %s" % sid)
        if ctype == "date":
            m = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", s.strip())
            d = None
            if m:
                try:
                    d = dt.date(int(m.group(3)), int(m.group(1)), int(m.group(2)))
                except ValueError:
                    d = None
            if d is None:
                raise self.svc_error(400, "Invalid date literal '%s' for %s.%s, expected MM/dd/yyyy"
                                     % (s, tname, alias))
            return ymd(d)
        if ctype == "num":
            try:
                f = float(s.strip())
            except ValueError:
                raise self.svc_error(400, "Invalid numeric literal '%s' for %s.%s" % (s, tname, alias))
            return int(f) if f == int(f) else f
        if ctype == "mcu":
            return s.strip()
        return s.rstrip()

    @staticmethod
    def getter(alias, ctype):
        if ctype == "str":
            return lambda r: r[alias].rstrip()
        if ctype == "mcu":
            return lambda r: r[alias].strip()
        return lambda r: r[alias]

    def compile_cond(self, tname, c, login_user):
        if not isinstance(c, dict):
            raise self.svc_error(400, "Invalid condition: expected an object")
        alias, ctype = self.resolve_col(tname, c.get("controlId"), "condition")
        op = str(c.get("operator") or "").upper()
        raw_vals = c.get("value") or []
        if not isinstance(raw_vals, list):
            raise self.svc_error(400, "Condition value for %s.%s must be a list" % (tname, alias))
        g = self.getter(alias, ctype)
        if op in ("STR_BLANK", "STR_NOT_BLANK"):
            blank = (lambda r: str(r[alias]).strip() == "") if ctype != "num" else (lambda r: False)
            if op == "STR_BLANK":
                return blank
            return lambda r: not blank(r)
        if op in ("STR_START_WITH", "STR_END_WITH", "STR_CONTAIN"):
            if len(raw_vals) < 1:
                raise self.svc_error(400, "Operator %s on %s.%s needs a value" % (op, tname, alias))
            v0 = raw_vals[0]
            s = str(v0.get("content") if isinstance(v0, dict) and v0.get("content") is not None else "")
            sg = g if ctype in ("str", "mcu") else (lambda r: str(r[alias]))
            if op == "STR_START_WITH":
                return lambda r: sg(r).startswith(s)
            if op == "STR_END_WITH":
                return lambda r: sg(r).endswith(s)
            return lambda r: s in sg(r)
        vals = [self.literal(tname, alias, ctype, v, login_user) for v in raw_vals]
        if op in ("EQUAL", "NOT_EQUAL", "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL"):
            if len(vals) < 1:
                raise self.svc_error(400, "Operator %s on %s.%s needs a value" % (op, tname, alias))
            v = vals[0]
            if op == "EQUAL":
                return lambda r: g(r) == v
            if op == "NOT_EQUAL":
                return lambda r: g(r) != v
            if op == "LESS":
                return lambda r: g(r) < v
            if op == "LESS_EQUAL":
                return lambda r: g(r) <= v
            if op == "GREATER":
                return lambda r: g(r) > v
            return lambda r: g(r) >= v
        if op == "BETWEEN":
            if len(vals) < 2:
                raise self.svc_error(400, "Operator BETWEEN on %s.%s needs two values" % (tname, alias))
            lo, hi = vals[0], vals[1]
            return lambda r: lo <= g(r) <= hi
        if op == "LIST":
            if len(vals) < 1:
                raise self.svc_error(400, "Operator LIST on %s.%s needs at least one value" % (tname, alias))
            vs = set(vals)
            return lambda r: g(r) in vs
        raise self.svc_error(400, "Unknown operator '%s'" % op)

    def compile_query(self, tname, q, login_user, depth=0):
        """Predicate for a query object, or None when it matches everything."""
        if q is None:
            return None
        if depth > 20:
            raise self.svc_error(400, "complexQuery nested too deeply")
        if not isinstance(q, dict):
            raise self.svc_error(400, "query must be an object")
        match = str(q.get("matchType") or "MATCH_ALL").upper()
        if match not in ("MATCH_ALL", "MATCH_ANY"):
            raise self.svc_error(400, "Invalid matchType '%s'" % match)
        conds = q.get("condition") or []
        if not isinstance(conds, list):
            raise self.svc_error(400, "query.condition must be a list")
        preds = [self.compile_cond(tname, c, login_user) for c in conds]
        acc = None
        if len(preds) == 1:
            acc = preds[0]
        elif preds:
            ps = tuple(preds)
            if match == "MATCH_ALL":
                acc = lambda r: all(p(r) for p in ps)
            else:
                acc = lambda r: any(p(r) for p in ps)
        cq = q.get("complexQuery") or []
        if not isinstance(cq, list):
            raise self.svc_error(400, "query.complexQuery must be a list")
        for entry in cq:
            if not isinstance(entry, dict):
                raise self.svc_error(400, "complexQuery entries must be objects")
            andor = str(entry.get("andOr") or "AND").upper()
            if andor not in ("AND", "OR"):
                raise self.svc_error(400, "Invalid andOr '%s'" % andor)
            sub = self.compile_query(tname, entry.get("query"), login_user, depth + 1)
            if sub is None:
                sub = lambda r: True
            if acc is None:
                acc = sub
            elif andor == "AND":
                acc = (lambda a, b: (lambda r: a(r) and b(r)))(acc, sub)
            else:
                acc = (lambda a, b: (lambda r: a(r) or b(r)))(acc, sub)
        return acc

    # ------------------------------------------------------------------
    # data service

    def parse_page_size(self, v):
        cap = self.fault("max_page_size")
        if v is None or (isinstance(v, str) and not v.strip()):
            ps = 100
        elif isinstance(v, str) and v.strip().lower() == "no max":
            ps = None
        else:
            try:
                ps = int(str(v).strip())
            except ValueError:
                raise self.svc_error(400, "Invalid maxPageSize '%s'" % v)
            if ps <= 0:
                raise self.svc_error(400, "Invalid maxPageSize '%s'" % v)
        if cap is not None:
            try:
                cap = int(cap)
            except (TypeError, ValueError):
                cap = None
            if cap and cap > 0:
                ps = cap if ps is None else min(ps, cap)
        return ps

    def grid(self, tname, colmap, page, more, link, v2=True):
        t = TABLES[tname]
        out = {
            "fs_DATABROWSE_%s" % tname: {
                "title": "Data Browser - %s [%s]" % (tname, t["title"]),
                "data": {"gridData": {
                    "id": 1, "fullGridId": "1", "columns": colmap, "rowset": page,
                    "summary": {"records": len(page), "moreRecords": bool(more)}}},
                "errors": [], "warnings": []},
            "currentApp": "DATABROWSE_%s" % tname,
            "timeStamp": self.local_now().strftime("%Y-%m-%d:%H.%M.%S"),
            "sysErrors": [],
        }
        if link:
            out["links"] = [{"rel": "next", "href": "http://127.0.0.1:%d/jderest/v2/dataservice/next" % self.port}]
        return out

    def page_faults(self, tname, page, colkeys, out_builder):
        """Apply bad_row / malformed faults to one page answer."""
        note = None
        if self.take("bad_row"):
            key = "%s_%s" % (tname, TABLES[tname]["key"])
            junk = dict(page[-1]) if page else {k: "" for k in colkeys}
            # a one-column key gets text where a number belongs; a composite
            # key's first column is null (a blank part is a valid key part)
            junk[key] = "GARBAGE" if len(TABLES[tname]["keys"]) == 1 else None
            page = page + [junk]
            note = "fault=bad_row"
        out = out_builder(page)
        if self.take("malformed"):
            raw = simbase.json_bytes(out)
            return Reply(200, raw=raw[:max(1, len(raw) // 2)], note="fault=malformed")
        return Reply(200, out, note=note)

    def exception_200(self):
        return Reply(200, {"message": "Simulated JDERestServiceException: the AIS server could not complete the "
                                      "request", "exception": "JDERestServiceException",
                           "timeStamp": ts_error()}, note="fault=exception_200")

    def h_dataservice(self, h, v2):
        self.require_json(h, optional=False)
        body = self.body_obj(h, optional=False)
        kind, rec = self.session(h, body)
        login_user = self.args.user.upper()
        with self.lock:
            if rec is not None:
                rec["cursor"] = None  # a new request replaces the open cursor
            if self.take("exception_200"):
                return self.exception_200()
            if self.take("error_500"):
                return self.svc_error(500, "Simulated server failure", exception="JDERestServiceException")
            target = str(body.get("targetName") or "").strip()
            tname = target.upper()
            ttype = str(body.get("targetType") or "table").lower()
            if tname not in TABLES or ttype != "table":
                return self.svc_error(500, "Table %s is not a valid data source" % (target or "(none)"))
            tdef = TABLES[tname]
            dstype = str(body.get("dataServiceType") or "BROWSE").upper()
            if dstype not in ("BROWSE", "COUNT", "AGGREGATION"):
                return self.svc_error(400, "Invalid dataServiceType '%s'" % dstype)
            pred = self.compile_query(tname, body.get("query"), login_user)
            agg = body.get("aggregation") or {}
            if not isinstance(agg, dict):
                return self.svc_error(400, "aggregation must be an object")
            order = agg.get("orderBy") or []
            if not isinstance(order, list):
                return self.svc_error(400, "aggregation.orderBy must be a list")
            sorts = []
            for ob in order:
                if not isinstance(ob, dict):
                    return self.svc_error(400, "orderBy entries must be objects")
                alias, ctype = self.resolve_col(tname, ob.get("column"), "orderBy")
                d = str(ob.get("direction") or "ASC").upper()
                if d not in ("ASC", "DESC"):
                    return self.svc_error(400, "Invalid orderBy direction '%s'" % d)
                sorts.append((alias, ctype, d == "DESC"))
            rids = body.get("returnControlIDs")
            if rids is None or (isinstance(rids, str) and not rids.strip()):
                cols = list(tdef["order"])
            else:
                cols = []
                for part in str(rids).split("|"):
                    if part.strip():
                        alias, _ = self.resolve_col(tname, part, "returnControlIDs")
                        if alias not in cols:
                            cols.append(alias)
            ps = self.parse_page_size(body.get("maxPageSize"))
            src = self.tables[tname]
            rows = [r for r in src if pred(r)] if pred is not None else list(src)
            if dstype == "COUNT":
                return Reply(200, {"ds_%s" % tname: {"output": [{"count": len(rows)}]}})
            if dstype == "AGGREGATION":
                return self.aggregate(tname, rows, agg)
            for alias, ctype, desc in reversed(sorts):
                rows.sort(key=self.getter(alias, ctype), reverse=desc)
            keys = [("%s_%s" % (tname, a), a) for a in cols]
            dates = [(k, a) for k, a in keys if tdef["types"][a] == "date"]
            if self.args.dates == "julian" and dates:
                # dates as the table stores them: Julian CYYDDD numbers, 0 = none
                proj = []
                for r in rows:
                    o = {k: r[a] for k, a in keys}
                    for k, a in dates:
                        o[k] = julian(r[a])
                    proj.append(o)
            else:
                proj = [{k: r[a] for k, a in keys} for r in rows]
            colmap = {k: tdef["labels"][a] for k, a in keys}
            paging = v2 and kind == "token" and body.get("enableNextPageProcessing") in (True, "true", "TRUE", "True")
            first = proj if ps is None else proj[:ps]
            more = ps is not None and len(proj) > ps
            if paging and more:
                rec["cursor"] = {"table": tname, "rows": proj, "pos": ps, "ps": ps, "colmap": colmap,
                                 "used": time.monotonic()}
            link = paging and more
            return self.page_faults(tname, first, [k for k, _ in keys],
                                    lambda page: self.grid(tname, colmap, page, more, link))

    def aggregate(self, tname, rows, agg):
        aggs = agg.get("aggregations") or []
        groups = agg.get("groupBy") or []
        if not isinstance(aggs, list) or not isinstance(groups, list):
            raise self.svc_error(400, "aggregation.aggregations and groupBy must be lists")
        specs = []
        for a in aggs:
            if not isinstance(a, dict):
                raise self.svc_error(400, "aggregation entries must be objects")
            fn = str(a.get("aggregation") or "").upper()
            col = str(a.get("column") or "*")
            if fn not in ("COUNT", "COUNT_DISTINCT", "SUM", "AVG", "MIN", "MAX"):
                raise self.svc_error(400, "Unsupported aggregation '%s'" % fn)
            if col == "*":
                if fn != "COUNT":
                    raise self.svc_error(400, "Only COUNT accepts column '*'")
                specs.append(("COUNT", None, None, "COUNT"))
            else:
                alias, ctype = self.resolve_col(tname, col, "aggregation")
                specs.append((fn, alias, ctype, "%s.%s_%s" % (tname, alias, fn)))
        if not specs:
            specs.append(("COUNT", None, None, "COUNT"))
        gcols = []
        for g in groups:
            c = g.get("column") if isinstance(g, dict) else g
            gcols.append(self.resolve_col(tname, c, "groupBy"))
        buckets = {}
        for r in rows:
            k = tuple(self.getter(a, t)(r) for a, t in gcols)
            buckets.setdefault(k, []).append(r)
        if not gcols and not buckets:
            buckets[()] = []
        out = []
        for k in sorted(buckets):
            rs = buckets[k]
            item = {}
            if gcols:
                item["groupBy"] = {"%s.%s" % (tname, a): v for (a, _t), v in zip(gcols, k)}
            for fn, alias, ctype, key in specs:
                if alias is None:
                    item[key] = len(rs)
                    continue
                vals = [self.getter(alias, ctype)(r) for r in rs]
                if fn == "COUNT":
                    item[key] = len(vals)
                elif fn == "COUNT_DISTINCT":
                    item[key] = len(set(vals))
                elif fn == "MIN":
                    item[key] = min(vals) if vals else None
                elif fn == "MAX":
                    item[key] = max(vals) if vals else None
                elif ctype != "num":
                    raise self.svc_error(400, "%s needs a numeric column" % fn)
                elif fn == "SUM":
                    item[key] = sum(vals)
                else:
                    item[key] = (sum(vals) / len(vals)) if vals else None
            out.append(item)
        return Reply(200, {"ds_%s" % tname: {"output": out}})

    def h_next(self, h):
        self.require_json(h, optional=True)
        body = self.body_obj(h, optional=True)
        kind, rec = self.session(h, body)
        if kind != "token":
            return self.svc_error(400, "No next page available (stateless requests have no cursor)")
        with self.lock:
            if self.take("drop_cursor"):
                rec["cursor"] = None
                r = self.svc_error(400, "No next page available")
                r.note = "fault=drop_cursor"
                return r
            cur = rec.get("cursor")
            idle = self.fault("cursor_idle_s")
            if cur is not None and idle is not None and time.monotonic() - cur["used"] > float(idle):
                rec["cursor"] = cur = None
            if cur is None:
                return self.svc_error(400, "No next page available")
            if self.take("exception_200"):
                return self.exception_200()
            if self.take("error_500"):
                return self.svc_error(500, "Simulated server failure")
            start = cur["pos"]
            page = cur["rows"][start:start + cur["ps"]]
            cur["pos"] = start + cur["ps"]
            cur["used"] = time.monotonic()
            more = cur["pos"] < len(cur["rows"])
            if not more:
                rec["cursor"] = None
            tname = cur["table"]
            colmap = cur["colmap"]
            return self.page_faults(tname, page, list(colmap),
                                    lambda pg: self.grid(tname, colmap, pg, more, more))

    # ------------------------------------------------------------------
    # orchestrations

    ORCHESTRATIONS = {
        # name -> (required inputs, handler name)
        "MLC_UpdateWOStatus": (("WorkOrder", "Status"), "orch_update_status"),
        "MLC_HoldWorkOrder": (("WorkOrder", "HoldCode"), "orch_hold"),
        "MLC_UpdateWODates": (("WorkOrder", "RequestedDate"), "orch_update_dates"),
        "MLC_UpdateWOPriority": (("WorkOrder", "Priority"), "orch_update_priority"),
    }

    def h_orchestrator(self, h, name):
        self.require_json(h, optional=True)
        body = self.body_obj(h, optional=True)
        kind, rec = self.session(h, body)
        inputs = {}
        if isinstance(body.get("inputs"), list):
            for it in body["inputs"]:
                if isinstance(it, dict) and "name" in it:
                    inputs[str(it["name"])] = it.get("value")
        else:
            for k, v in body.items():
                if k not in ("token", "deviceName", "outputType"):
                    inputs[k] = v
        try:
            reply = self.run_orchestration(name, inputs)
        except Reply as r:
            reply = r
        obj = reply.obj if isinstance(reply.obj, dict) else {}
        with self.lock:
            self.orch_log.append({
                "seq": len(self.orch_log) + 1, "name": name, "inputs": inputs, "auth": kind,
                "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                "status": reply.status, "outcome": "ok" if reply.status < 300 else "error",
                "message": obj.get("jde__simpleMessage") or obj.get("userDefinedErrorText") or obj.get("message"),
            })
        return reply

    def run_orchestration(self, name, inputs):
        if self.take("error_500"):
            r = self.svc_error(500, "Simulated orchestration failure", userDefinedErrorText="")
            r.note = "fault=error_500"
            return r
        spec = self.ORCHESTRATIONS.get(name)
        if spec is None:
            return self.svc_error(404, "Orchestration %s not found" % name,
                                  userDefinedErrorText="Orchestration %s is not defined" % name)
        required, handler = spec
        for k in required:
            if inputs.get(k) is None:
                return self.svc_error(400, "Missing orchestration input %s" % k,
                                      userDefinedErrorText="Input %s is required" % k)
        started = ts_error()
        t0 = time.monotonic()
        wo = str(inputs["WorkOrder"]).strip()
        with self.lock:
            try:
                doco = int(wo)
            except ValueError:
                doco = None
            row = self.index["F4801"].get(doco)
            if row is None:
                return self.svc_error(500, "Orchestration %s failed" % name,
                                      userDefinedErrorText="Work order %s does not exist" % wo,
                                      jde__status="ERROR")
            out = getattr(self, handler)(name, wo, row, inputs)
            if isinstance(out, Reply):
                return out
            row["UPMJ"], row["TDAY"] = self.tick()
            row["USER"] = pad(self.args.user.upper(), 10)
            row["PID"] = "P48013"
        out.update({
            "jde__status": "SUCCESS",
            "jde__startTimestamp": started, "jde__endTimestamp": ts_error(),
            "jde__serverExecutionSeconds": round(time.monotonic() - t0, 3),
        })
        return Reply(200, out)

    def orch_update_status(self, name, wo, row, inputs):
        """MLC_UpdateWOStatus: SRST = Status (UDC 00/SS). Caller holds the lock."""
        st = str(inputs["Status"]).strip()
        if st not in VALID_SRST:
            return self.svc_error(500, "Orchestration %s failed" % name,
                                  userDefinedErrorText="Status '%s' is not a valid work order status "
                                                       "(UDC 00/SS)" % st, jde__status="ERROR")
        old = row["SRST"]
        row["SRST"] = st
        return {"WorkOrder": wo, "Status": st,
                "jde__simpleMessage": "Work order %s status changed from %s to %s" % (wo, old, st)}

    def orch_hold(self, name, wo, row, inputs):
        """MLC_HoldWorkOrder: WR10 = HoldCode (1-3 characters, blank releases). Caller holds the lock."""
        code = str(inputs["HoldCode"]).strip()
        if len(code) > 3:
            return self.svc_error(500, "Orchestration %s failed" % name,
                                  userDefinedErrorText="Hold code '%s' is longer than 3 characters "
                                                       "(UDC 00/W0)" % code, jde__status="ERROR")
        old = row["WR10"].strip()
        row["WR10"] = code.ljust(3)
        msg = ("Work order %s released from hold %s" % (wo, old or "(none)") if not code else
               "Work order %s put on hold %s" % (wo, code))
        return {"WorkOrder": wo, "HoldCode": code, "jde__simpleMessage": msg}

    def orch_update_dates(self, name, wo, row, inputs):
        """MLC_UpdateWODates: DRQJ = RequestedDate, given as YYYYMMDD (8 digits, a
        real date; the form F4801 rows show dates in). Caller holds the lock."""
        val = str(inputs["RequestedDate"]).strip()
        ok = re.fullmatch(r"\d{8}", val) is not None
        if ok:
            try:
                dt.datetime.strptime(val, "%Y%m%d")
            except ValueError:
                ok = False
        if not ok:
            return self.svc_error(500, "Orchestration %s failed" % name,
                                  userDefinedErrorText="Requested date '%s' is not a valid date "
                                                       "(expected YYYYMMDD)" % val, jde__status="ERROR")
        old = row["DRQJ"]
        row["DRQJ"] = val
        return {"WorkOrder": wo, "RequestedDate": val,
                "jde__simpleMessage": "Work order %s requested date changed from %s to %s" % (wo, old, val)}

    def orch_update_priority(self, name, wo, row, inputs):
        """MLC_UpdateWOPriority: PRTS = Priority (UDC 00/PR, 1-5). Caller holds the lock."""
        val = str(inputs["Priority"]).strip()
        if val not in VALID_PRTS:
            return self.svc_error(500, "Orchestration %s failed" % name,
                                  userDefinedErrorText="Priority '%s' is not a valid work order priority "
                                                       "(UDC 00/PR: 1-5)" % val, jde__status="ERROR")
        old = row["PRTS"]
        row["PRTS"] = val
        return {"WorkOrder": wo, "Priority": val,
                "jde__simpleMessage": "Work order %s priority changed from %s to %s" % (wo, old, val)}

    # ------------------------------------------------------------------
    # control endpoints

    def control(self, method, p, h):
        if p == "/_sim/expire_tokens" and method == "POST":
            with self.lock:
                n = len(self.tokens)
                self.tokens.clear()
            return Reply(200, {"killed": n})
        if p == "/_sim/tokens" and method == "GET":
            now = time.monotonic()
            ttl = self.token_ttl()
            with self.lock:
                out = [{"token": r["token"], "deviceName": r["device"],
                        "expires_in_s": round(r["base"] + ttl - now, 3),
                        "cursor": (None if not r["cursor"] else
                                   {"pos": r["cursor"]["pos"], "rows": len(r["cursor"]["rows"])})}
                       for r in self.tokens.values()]
            return Reply(200, out)
        if p == "/_sim/touch" and method == "POST":
            b = control_json(h)
            tname = str(b.get("table") or "F4801").upper()
            if tname not in TABLES:
                return Reply(400, {"error": "unknown table %s (known: %s)" % (tname, ", ".join(TABLES))})
            try:
                n = int(b.get("count", 1))
            except (TypeError, ValueError):
                return Reply(400, {"error": "count must be an integer"})
            tc = TABLES[tname]["time"]
            with self.lock:
                rows = self.tables[tname]
                n = max(0, min(n, len(rows)))
                picked = self.touch_rng.sample(rows, n)
                upmj, tday = self.tick()
                for r in picked:
                    self.touch_row(tname, r)
                    r["UPMJ"], r[tc] = upmj, tday
                keys = sorted(self.row_key(tname, r) for r in picked)
            return Reply(200, {"keys": keys, "UPMJ": upmj, tc: tday})
        if p == "/_sim/update" and method == "POST":
            # set columns of one row, as a person editing it in JD Edwards would
            # (UPMJ and the time column move, so a poller sees the change)
            b = control_json(h)
            tname = str(b.get("table") or "F4801").upper()
            if tname not in TABLES:
                return Reply(400, {"error": "unknown table %s (known: %s)" % (tname, ", ".join(TABLES))})
            sets = b.get("set")
            if not isinstance(sets, dict) or not sets:
                return Reply(400, {"error": "set must be an object of column -> value"})
            with self.lock:
                row = self.lookup(tname, b.get("key"))
                if row is None:
                    return Reply(404, {"error": "no %s row with key %s" % (tname, b.get("key"))})
                bad = [c for c in sets if c not in row]
                if bad:
                    return Reply(400, {"error": "unknown columns %s" % bad})
                row.update(sets)
                if not b.get("keep_stamp"):
                    upmj, tday = self.tick()
                    row["UPMJ"], row[TABLES[tname]["time"]] = upmj, tday
                # keep_stamp: a fix-up written straight to the table, which
                # leaves the audit columns alone (no poller sees it)
                return Reply(200, dict(row))
        if p == "/_sim/delete" and method == "POST":
            # a row deleted in JD Edwards: gone from every later query, no stamp
            b = control_json(h)
            tname = str(b.get("table") or "F4801").upper()
            if tname not in TABLES:
                return Reply(400, {"error": "unknown table %s (known: %s)" % (tname, ", ".join(TABLES))})
            with self.lock:
                row = self.lookup(tname, b.get("key"))
                if row is None:
                    return Reply(404, {"error": "no %s row with key %s" % (tname, b.get("key"))})
                self.tables[tname] = [r for r in self.tables[tname] if r is not row]
                del self.index[tname][self.row_key(tname, row)]
                return Reply(200, dict(row))
        if p == "/_sim/seed" and method == "POST":
            b = control_json(h)
            try:
                n = int(b.get("count", self.args.seed))
                rs = int(b.get("rng_seed", self.args.rng_seed))
                sizes = self.finance_sizes()
                for k in sizes:
                    if k in b:
                        sizes[k] = int(b[k])
            except (TypeError, ValueError):
                return Reply(400, {"error": "count, rng_seed and the table sizes must be integers"})
            if n < 0 or n > 1000000 or any(v < 0 or v > 1000000 for v in sizes.values()):
                return Reply(400, {"error": "count out of range"})
            self.sizes = sizes
            self.generate(n, rs)
            with self.lock:
                counts = {t: len(rs_) for t, rs_ in self.tables.items()}
            return Reply(200, {"rows": n, "tables": counts})
        if p == "/_sim/rows" and method == "GET":
            tname = str(h.qparam("table", "F4801")).upper()
            if tname not in TABLES:
                return Reply(404, {"error": "unknown table %s" % tname})
            key = h.qparam("key")
            with self.lock:
                if key is None:
                    return Reply(200, [dict(r) for r in self.tables[tname]])
                r = self.lookup(tname, key)
                if r is None:
                    return Reply(404, {"error": "no row %s in %s" % (key, tname)})
                return Reply(200, dict(r))
        if p == "/_sim/orchestrations" and method == "GET":
            name = h.qparam("name")
            with self.lock:
                return Reply(200, [dict(e) for e in self.orch_log if name is None or e["name"] == name])
        if p == "/_sim/orchestrations/clear" and method == "POST":
            with self.lock:
                n = len(self.orch_log)
                self.orch_log = []
            return Reply(200, {"cleared": n})
        if p == "/_sim/clock" and method == "GET":
            with self.lock:
                c = self.clock_last
            return Reply(200, {"last_UPMJ": ymd(c) if c else None,
                               "last_TDAY": (c.hour * 10000 + c.minute * 100 + c.second) if c else None,
                               "local_now": self.local_now().isoformat()})
        return None


if __name__ == "__main__":
    sys.exit(simbase.main(JdeSim))
