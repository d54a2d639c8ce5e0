#!/usr/bin/env python3
"""A synthetic month of a support centre's reveal events, for
`tokenvault anomaly replay` (docs/anomaly.md).

About 50 operators in three shifts (06-14, 14-22, 22-06), five days a
week with fixed days off, sick days, late finishes and a few shift swaps;
each has a queue of customers and mostly reads those, a ticket at a time.
Service accounts beside them: a nightly billing batch (no actor), a fraud
model around the clock, a KYC worker in office hours. From day 8 on,
labelled insider incidents are injected ("incident": "type/n"):
bulk_export, slow_drip, breadth_scan, off_hours (a stolen token used at
night), new_purpose.

Subjects are written as keyed-hash-like hex strings; no value, token or
subject id is in the file. Python standard library only.

    python3 benches/anomaly_month.py --seed 1 > month-1.jsonl
"""

import argparse
import hashlib
import json
import random
import sys

DAY = 86400
HOUR = 3600
START = 1793577600  # 2026-11-02 00:00 UTC, a Monday
SHIFTS = [(6, 14), (14, 22), (22, 30)]
PURPOSES = [("ticket", 0.84), ("callback", 0.10), ("refund", 0.05), ("chargeback", 0.01)]
FORMATS = [("phone", 0.45), ("email", 0.30), ("card", 0.15), ("person_name", 0.09), ("iban", 0.01)]
# Purposes an insider might give; each new_purpose incident takes the next.
ODD_PURPOSES = ["marketing-list", "personal", "crm-export", "lead-gen", "test", "sample", "backup", "research",
                "list-build", "outreach", "check", "misc"]
TYPES = ["bulk_export", "slow_drip", "breadth_scan", "off_hours", "new_purpose"]


def pick(rng, table):
    r = rng.random()
    for name, p in table:
        r -= p
        if r <= 0:
            return name
    return table[-1][0]


class Out:
    def __init__(self, key):
        self.key = key
        self.events = []

    def subject(self, customer):
        return hashlib.sha256(self.key + customer.encode()).hexdigest()[:32]

    def emit(self, ts, principal, actor, customers, values, purpose, formats, rpc="detokenize", full=None, incident=None):
        e = {
            "ts": int(ts),
            "principal": principal,
            "actor": actor,
            "rpc": rpc,
            "purpose": purpose,
            "formats": sorted(set(formats)),
            "subjects": sorted({self.subject(c) for c in customers}),
            "values": values,
            "full": values if full is None else full,
        }
        if incident:
            e["incident"] = incident
        self.events.append(e)


def reveal(rng, out, ts, actor, customer, purpose=None, incident=None):
    values = rng.choice([1, 1, 1, 2, 2, 3])
    formats = [pick(rng, FORMATS) for _ in range(values)]
    full = sum(1 for f in formats if f != "card")
    out.emit(ts, "support", actor, [customer], values, purpose or pick(rng, PURPOSES), formats, full=full, incident=incident)


def operator_day(rng, out, op, day, start_h, end_h, busy):
    """One shift of one operator: tickets from its queue."""
    t = START + day * DAY + start_h * HOUR + rng.uniform(-900, 900)
    end = START + day * DAY + end_h * HOUR + rng.choice([0, 0, 0, rng.uniform(0, 2700)]) + rng.uniform(-600, 300)
    while t < end:
        t += rng.expovariate(busy / 600.0)  # a ticket every ~10 minutes
        if rng.random() < 0.02:
            t += rng.uniform(900, 1800)  # a break
        if t >= end:
            break
        customer = rng.choice(op["queue"]) if rng.random() < 0.8 else "c%d" % rng.randrange(20000)
        calls = rng.choice([1, 1, 2, 2, 3, 4])
        ct = t
        for _ in range(calls):
            reveal(rng, out, ct, op["name"], customer)
            ct += rng.uniform(20, 180)
        t = ct


def services(rng, out, day, busy):
    base = START + day * DAY
    # Billing batch, no actor: 01:00, a few hundred customers.
    n = int(rng.uniform(250, 450) * busy)
    t = base + HOUR + rng.uniform(0, 300)
    for i in range(0, n, 25):
        customers = ["b%d" % rng.randrange(50000) for _ in range(min(25, n - i))]
        out.emit(t, "billing", None, customers, len(customers), "invoice", ["card", "iban"], rpc="export_subject", full=0)
        t += rng.uniform(5, 15)
    # Fraud model: around the clock.
    t = base
    while t < base + DAY:
        t += rng.expovariate(1 / 100.0)
        out.emit(t, "fraud", "fraud-model", ["c%d" % rng.randrange(20000)], rng.choice([1, 2]), "fraud-check", ["card"], full=0)
    # KYC worker: office hours on weekdays.
    if day % 7 < 5:
        t = base + 9 * HOUR
        while t < base + 18 * HOUR:
            t += rng.expovariate(1 / 240.0)
            out.emit(t, "kyc", "kyc-worker", ["c%d" % rng.randrange(20000)], 3, "kyc-review", ["ru_passport", "person_name"])


def inject(rng, out, kind, n, op, day):
    name = op["name"]
    label = "%s/%d" % (kind, n)
    s, e = op["shift"]
    base = START + day * DAY
    in_shift = base + (s + rng.uniform(1, (e - s) - 2)) * HOUR
    if kind == "bulk_export":
        t = in_shift
        for _ in range(rng.randrange(20, 60)):
            customers = ["x%d" % rng.randrange(200000) for _ in range(rng.randrange(5, 12))]
            out.emit(t, "support", name, customers, len(customers), "ticket", ["phone", "email"], incident=label)
            t += rng.uniform(2, 8)
    elif kind == "slow_drip":
        t = base + (s + rng.uniform(0.5, 2)) * HOUR
        stop = t + rng.uniform(3, 5) * HOUR
        while t < stop:
            out.emit(t, "support", name, ["x%d" % rng.randrange(200000)], 1, "ticket", ["phone"], incident=label)
            t += rng.uniform(40, 70)
    elif kind == "breadth_scan":
        t = in_shift
        for _ in range(rng.randrange(25, 45)):
            out.emit(t, "support", name, ["x%d" % rng.randrange(200000)], 1, "ticket", ["phone"], incident=label)
            t += rng.uniform(3, 9)
    elif kind == "off_hours":
        # Hours the owner never works, nor the hours either side.
        hour = {6: rng.choice([0, 1, 2, 3]), 14: rng.choice([4, 6, 8, 10])}.get(s, rng.choice([11, 13, 15]))
        t = base + hour * HOUR + rng.uniform(0, 1800)
        for _ in range(rng.randrange(3, 10)):
            reveal(rng, out, t, name, rng.choice(op["queue"]), incident=label)
            t += rng.uniform(30, 120)
    elif kind == "new_purpose":
        t = in_shift
        for _ in range(rng.randrange(2, 6)):
            purpose = ODD_PURPOSES[n % len(ODD_PURPOSES)]
            reveal(rng, out, t, name, rng.choice(op["queue"]), purpose=purpose, incident=label)
            t += rng.uniform(30, 120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--operators", type=int, default=50)
    ap.add_argument("--incidents-per-type", type=int, default=8)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out = Out(("anomaly-month-%d" % args.seed).encode())
    ops = []
    for i in range(args.operators):
        shift = SHIFTS[0] if i < 20 else SHIFTS[1] if i < 40 else SHIFTS[2]
        off = rng.randrange(7)
        ops.append({
            "name": "op%02d" % (i + 1),
            "shift": shift,
            "off": {off, (off + 1) % 7},
            "queue": ["c%d" % rng.randrange(20000) for _ in range(40)],
        })
    # Incidents: from day 8, one operator and day each, never on its day off.
    plan = {}
    n = 0
    for kind in TYPES:
        for _ in range(args.incidents_per_type):
            while True:
                op = rng.randrange(len(ops))
                day = rng.randrange(8, args.days - 1)
                if day % 7 not in ops[op]["off"] and (op, day) not in plan:
                    break
            n += 1
            plan[(op, day)] = (kind, n)
    for day in range(args.days):
        busy = rng.uniform(0.8, 1.2) * (1.2 if day % 7 == 0 else 1.0)
        services(rng, out, day, busy)
        for i, op in enumerate(ops):
            if day % 7 in op["off"] or rng.random() < 0.03:
                continue
            s, e = op["shift"]
            if rng.random() < 0.005:
                s, e = rng.choice([x for x in SHIFTS if x != op["shift"]])  # a swap
            operator_day(rng, out, op, day, s, e, busy)
        for i, op in enumerate(ops):
            if (i, day) in plan:
                kind, k = plan[(i, day)]
                inject(rng, out, kind, k, op, day)
    out.events.sort(key=lambda e: e["ts"])
    w = sys.stdout
    for e in out.events:
        w.write(json.dumps(e, separators=(",", ":")) + "\n")
    print("events %d, incidents %d" % (len(out.events), n), file=sys.stderr)


if __name__ == "__main__":
    main()
