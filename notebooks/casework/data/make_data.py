"""Generate the casework example's small "production" dataset (deterministic).

    python make_data.py          # from anywhere; writes the CSVs beside this file

Writes customers.csv, orders.csv, cases.csv and kb.csv. Everything comes from one
seeded random generator and the hand-written case and knowledge-base lists below,
so re-running it reproduces the committed files byte for byte. stdlib + pandas only.

The background orders are clean: correct loyalty discount, correct VAT, on-time
delivery, returns refunded. Each case then injects the failure its description
talks about (or, for the cases where the customer is wrong, nothing at all).
"""

from __future__ import annotations

import math
import random
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
SEED = 20260601
SNAPSHOT = date(2026, 6, 1)  # the day the data was extracted; loyalty_years is counted to it
BACKGROUND_FROM, BACKGROUND_TO = datetime(2025, 1, 6), datetime(2026, 3, 27)

# The business policy the data was generated under (02_check_policy.ipynb has its own copy).
VAT = {"DE": 0.19, "FR": 0.20, "NL": 0.21, "ES": 0.21, "IE": 0.23}
LOYALTY_TIERS, LOYALTY_MIN_YEARS, LOYALTY_PCT = {"gold"}, 3, 10.0
PROMISE_DAYS = 4

FIRST = ["Anna", "Lukas", "Marie", "Jonas", "Sofia", "Liam", "Emma", "Noah", "Mia", "Elias",
         "Lea", "Paul", "Clara", "Hugo", "Ines", "Mateo", "Aoife", "Sean", "Lotte", "Daan",
         "Camille", "Louis", "Lucia", "Pablo", "Nora", "Finn", "Julia", "Oscar", "Chloe", "Ruben"]
LAST = ["Schmidt", "Muller", "Dubois", "Martin", "Garcia", "Lopez", "Murphy", "Kelly", "de Jong",
        "Jansen", "Fischer", "Weber", "Bernard", "Moreau", "Fernandez", "Ruiz", "Byrne", "Walsh",
        "Visser", "Bakker", "Wagner", "Becker", "Petit", "Roux", "Navarro", "Romero", "Ryan",
        "Smit", "Hoffmann", "Laurent"]
REGIONS = list(VAT)

# ---------------------------------------------------------------------------------------
# The cases. `customer` pins the customer attributes the story needs; `inject` names the
# failure written into the subject order; `days` is how long before the case was opened
# the subject order was placed. Text placeholders: {order_id} {ordered} {amount} {total}
# {promised} {years} {first}.
# ---------------------------------------------------------------------------------------
CASES = [
    dict(category="missing_discount", customer=dict(tier="gold", years=4), inject="no_discount", days=6,
         expected="apply_discount",
         text="Customer has been with us since {joined_year} and is Gold tier. Her last order {order_id} "
              "({ordered}) was charged without the usual 10% loyalty discount at checkout. She asks us "
              "to apply the discount and refund the difference."),
    dict(category="double_charge", customer=dict(tier="silver", years=1), inject="duplicate", days=5,
         expected="refund_duplicate",
         text="Customer sees two identical card charges of EUR {total} a few minutes apart for order "
              "{order_id}, but only one parcel arrived. Wants the extra charge back."),
    dict(category="shipping_delay", customer=dict(tier="bronze", years=2), inject="delayed", days=14,
         expected="escalate_carrier",
         text="Parcel for order {order_id} was promised for {promised} and still has not arrived. "
              "Tracking has said 'in transit - delayed' at the carrier hub for over a week. Customer "
              "asks where her parcel is."),
    dict(category="wrong_tax", customer=dict(tier="silver", years=2, region="FR"), inject=("wrong_rate", 0.23),
         days=8, expected="correct_tax",
         text="Customer in France says the VAT on the invoice for order {order_id} is higher than the "
              "usual 20% rate. She needs a corrected invoice with the right VAT for her accounting."),
    dict(category="refund_missing", customer=dict(tier="bronze", years=1), inject=("return_unrefunded", 20),
         days=34, expected="process_refund",
         text="Customer returned the jacket from order {order_id} three weeks ago. The warehouse "
              "confirmed the return was received but no refund has shown up on her card yet."),
    dict(category="missing_discount", customer=dict(tier="bronze", years=1), inject=None, days=7,
         expected="close_no_action",
         text="Customer says a friend gets a 10% loyalty discount and she should get it too; order "
              "{order_id} had no discount applied. She is Bronze tier and joined last year."),
    dict(category="account", customer=dict(tier="silver", years=3), inject=None, days=4,
         expected="escalate_to_human",
         text="Customer says she never placed order {order_id} and does not recognise the delivery "
              "address. She thinks someone else logged into her account from an unknown device."),
    dict(category="missing_discount", customer=dict(tier="silver", years=5), inject="no_discount_2", days=9,
         expected="apply_discount",
         text="Long-standing customer ({years} years) noticed the loyalty discount disappeared from "
              "her last two orders after the checkout update. Latest is order {order_id}. Wants the "
              "discount applied."),
    dict(category="double_charge", customer=dict(tier="bronze", years=2), inject="duplicate_refunded", days=6,
         expected="close_no_action",
         text="Customer reports being charged twice for order {order_id} on {ordered} and asks for "
              "the money back."),
    dict(category="shipping_delay", customer=dict(tier="gold", years=6), inject="lost", days=16,
         expected="escalate_carrier",
         text="Order {order_id} never arrived. The carrier tracking has not moved for ten days and "
              "the parcel now shows as lost. Gold customer, wants a replacement or her money."),
    dict(category="wrong_tax", customer=dict(tier="bronze", years=2, region="IE"), inject=("wrong_rate", 0.21),
         days=7, expected="correct_tax",
         text="Irish customer says she was charged the wrong VAT rate on order {order_id}: the "
              "invoice shows 21% instead of 23%, which her accountant flagged."),
    dict(category="refund_missing", customer=dict(tier="silver", years=2), inject="return_requested", days=12,
         expected="close_no_action",
         text="Customer says she sent back the shoes from order {order_id} last week and wants to "
              "know why there is no refund yet."),
    # Deliberate mismatch: the expert applies the newsletter's "2+ years" loyalty promise,
    # the workflow's rule still says 3 years (RULES["loyalty_min_years"] in 02_check_policy).
    dict(category="missing_discount", customer=dict(tier="silver", years=2), inject=None, days=5,
         expected="apply_discount",
         text="Silver customer with two years of loyalty says the loyalty discount promised in our "
              "spring newsletter (10% for customers with 2+ years) was not applied to order {order_id}."),
    dict(category="double_charge", customer=dict(tier="gold", years=7), inject="duplicate", days=4,
         expected="refund_duplicate",
         text="Gold customer was charged twice for order {order_id}: two payments of EUR {total} two "
              "minutes apart after the payment page timed out. Please refund the duplicate payment."),
    dict(category="shipping_delay", customer=dict(tier="silver", years=4), inject="late_delivered", days=15,
         expected="escalate_carrier",
         text="Order {order_id} arrived five days after the promised delivery date of {promised}. The "
              "customer had paid for on-time delivery and wants the carrier delay looked into."),
    # Deliberate mismatch (borderline): a vague billing complaint that is really a VAT error.
    dict(category="other", customer=dict(tier="bronze", years=1, region="DE"), inject=("wrong_rate", 0.21),
         days=6, expected="correct_tax",
         text="Customer says she paid more than expected for order {order_id} and would like someone "
              "to check the invoice."),
    dict(category="refund_missing", customer=dict(tier="gold", years=3), inject=("return_unrefunded", 15),
         days=28, expected="process_refund",
         text="Returned item from order {order_id} was scanned at the warehouse over two weeks ago, "
              "but the refund is still pending. Customer asks when she gets her money back."),
    dict(category="missing_discount", customer=dict(tier="gold", years=2), inject="no_discount", days=8,
         expected="apply_discount",
         text="Gold tier customer used a free-shipping code on order {order_id} and the loyalty "
              "discount was dropped instead of stacking with it."),
    dict(category="account", customer=dict(tier="bronze", years=2), inject=None, days=10,
         expected="escalate_to_human",
         text="Customer asks us to close her account and delete all her personal data under GDPR. "
              "She also mentions order {order_id}."),
    # Misfiled by the agent as a shipping delay; the records show a double charge.
    dict(category="shipping_delay", customer=dict(tier="silver", years=1), inject="duplicate", days=9,
         expected="refund_duplicate",
         text="Customer complains that the parcel for order {order_id} took a long time, and says her "
              "card statement shows the same order charged twice."),
    dict(category="refund_missing", customer=dict(tier="silver", years=3), inject=("partial_refund", 16),
         days=30, expected="process_refund",
         text="Customer returned the full order {order_id} but only received a partial refund of "
              "half the amount. The return was received by the warehouse more than two weeks ago."),
    dict(category="shipping_delay", customer=dict(tier="bronze", years=1), inject="late_within_grace", days=9,
         expected="close_no_action",
         text="Customer complains that order {order_id} arrived a day after the promised date of "
              "{promised}."),
    dict(category="wrong_tax", customer=dict(tier="gold", years=5, region="ES"), inject=("wrong_rate", 0.19),
         days=6, expected="correct_tax",
         text="Customer in Spain says order {order_id} was taxed at 19% VAT (the German rate?) "
              "instead of the Spanish 21%, so the invoice is wrong for her business."),
    dict(category="missing_discount", customer=dict(tier="silver", years=8), inject="no_discount", days=5,
         expected="apply_discount",
         text="Customer of {years} years placed order {order_id} on the mobile app and the 10% loyalty "
              "discount was not applied, although the website always applies it."),
    dict(category="double_charge", customer=dict(tier="bronze", years=1), inject="triple", days=5,
         expected="refund_duplicate",
         text="Customer double-clicked the Pay button on order {order_id} and was charged three times "
              "the same amount within a minute. Wants the duplicate charges refunded."),
]

# ---------------------------------------------------------------------------------------
# The knowledge base of past failures: (category, title, body, resolution).
# ---------------------------------------------------------------------------------------
KB = [
    ("missing_discount", "Loyalty discount not applied after tier upgrade",
     "Customer was upgraded to Gold tier during the month; checkout kept the old tier and the loyalty "
     "discount was not applied to the order.",
     "Refunded the 10% loyalty discount to the card and refreshed the customer's tier cache."),
    ("missing_discount", "Loyalty discount missing after checkout release",
     "After checkout release 4.2 the loyalty discount line disappeared for long-standing customers with "
     "three or more years of loyalty. Orders were charged at full price.",
     "Rolled back the pricing flag and applied the missing loyalty discount to affected orders."),
    ("missing_discount", "Promotion code overrode the loyalty discount",
     "Customer used a free-shipping code; the promotion engine dropped the 10% loyalty discount instead of "
     "stacking both.",
     "Applied the loyalty discount manually; promotion engine fixed to stack loyalty and shipping codes."),
    ("missing_discount", "Mobile app orders missing loyalty discount",
     "Orders placed on the mobile app did not send the loyalty flag, so no discount was applied while the "
     "website applied it.",
     "Credited the loyalty discount on the app orders; app release 7.1 sends the flag."),
    ("missing_discount", "Loyalty years counted from last order instead of join date",
     "A data job computed loyalty years from the last order date, so long-standing customers lost their "
     "loyalty discount.",
     "Recomputed loyalty years from the join date and refunded the discount difference."),
    ("missing_discount", "Discount shown in cart but not charged",
     "Cart showed the loyalty discount but the payment was captured at full price because the discount "
     "was not persisted on the order.",
     "Refunded the discount difference; fixed order persistence."),
    ("missing_discount", "Gold tier discount not applied on split shipment",
     "A Gold customer's order was split into two shipments and the second part was charged without the "
     "Gold tier discount.",
     "Applied the Gold discount to the second shipment and refunded the difference."),
    ("double_charge", "Card charged twice after payment timeout",
     "The payment page timed out, checkout retried and created a second order with the same amount two "
     "minutes later. Customer saw two identical charges.",
     "Refunded the duplicate payment and cancelled the duplicate order; idempotency key added to retries."),
    ("double_charge", "Duplicate order from double click on Pay button",
     "Customer double-clicked the Pay button and two orders with the same amount were charged within "
     "seconds.",
     "Refunded the duplicate charge; Pay button now disabled after the first click."),
    ("double_charge", "Two identical charges after 3-D Secure retry",
     "After a failed 3-D Secure challenge the customer retried and the card was charged twice for the "
     "same order.",
     "Refunded the second charge; gateway configured to void the first authorization on retry."),
    ("double_charge", "Duplicate charge on mobile app after network drop",
     "The app lost network during payment and resubmitted, charging the same amount twice.",
     "Refunded the duplicate charge."),
    ("double_charge", "Payment webhook replay charged the order twice",
     "The payment provider replayed a webhook and our system captured the same order a second time.",
     "Refunded the duplicate capture and de-duplicated webhook handling."),
    ("double_charge", "Customer charged twice for one parcel",
     "Card statement shows the order charged twice but only one parcel was shipped; the second charge "
     "belonged to a duplicate order that was never fulfilled.",
     "Cancelled the duplicate order and refunded its charge."),
    ("double_charge", "Triple charge after repeated submit",
     "Customer pressed submit repeatedly; three payments of the same amount were taken within a minute.",
     "Refunded the two duplicate payments."),
    ("shipping_delay", "Parcel stuck in transit at carrier hub",
     "Tracking showed the parcel in transit at the carrier hub for more than a week past the promised "
     "delivery date.",
     "Opened a claim with the carrier, who located and delivered the parcel; shipping fee refunded."),
    ("shipping_delay", "Tracking shows delayed for more than a week",
     "Carrier tracking said delayed for over a week with no new scan; customer asked where the parcel is.",
     "Escalated to the carrier's account manager; parcel re-routed and delivered."),
    ("shipping_delay", "Parcel lost by carrier",
     "The carrier confirmed the parcel as lost after ten days without a tracking scan.",
     "Filed a lost-parcel claim with the carrier and shipped a replacement."),
    ("shipping_delay", "Late delivery after promised date during carrier capacity shortage",
     "Parcels arrived several days after the promised delivery date because the carrier ran out of "
     "capacity.",
     "Raised an SLA claim with the carrier and refunded the express shipping fee."),
    ("shipping_delay", "Parcel held at depot because of an address issue",
     "The carrier held the parcel at the depot without notifying the customer; delivery was late.",
     "Carrier contacted to release the parcel; customer informed."),
    ("shipping_delay", "Carrier marked delivered but parcel missing",
     "Tracking shows delivered but the customer never received the parcel.",
     "Opened an investigation with the carrier; replacement shipped after the claim was accepted."),
    ("shipping_delay", "Holiday peak delays at the carrier",
     "During the holiday peak the carrier delivered many parcels late.",
     "Escalated to the carrier and offered affected customers a shipping refund."),
    ("wrong_tax", "VAT charged at the wrong country rate",
     "The tax service used the warehouse country instead of the customer's country, so VAT was charged "
     "at the wrong rate.",
     "Issued a corrected invoice with the customer's VAT rate and refunded the difference."),
    ("wrong_tax", "Invoice shows VAT too high after address change",
     "Customer moved country; the invoice still applied the old country's higher VAT rate.",
     "Corrected the VAT on the invoice and refunded the overcharged tax."),
    ("wrong_tax", "Tax computed before discount",
     "VAT was calculated on the price before the discount instead of the discounted price, overstating "
     "the tax.",
     "Recalculated the tax and issued a corrected invoice."),
    ("wrong_tax", "Irish customers charged the Dutch VAT rate",
     "A configuration error applied 21% VAT to Irish customers instead of the 23% Irish rate.",
     "Corrected the VAT rate table and re-issued the invoices."),
    ("wrong_tax", "Corrected invoice needed for business customer",
     "Business customer needs an invoice with the right VAT rate for her accounting; the original showed "
     "the wrong rate.",
     "Issued a corrected VAT invoice."),
    ("wrong_tax", "Rounding error in VAT on the invoice",
     "Per-line VAT rounding made the invoice tax differ by a few cents from the correct amount.",
     "Switched to per-invoice VAT rounding and corrected the invoice."),
    ("refund_missing", "Return received but refund not issued",
     "The warehouse confirmed the return was received but the refund job skipped the order, so no refund "
     "reached the card.",
     "Processed the refund manually and re-ran the refund job."),
    ("refund_missing", "Refund stuck in the payment provider queue",
     "The refund was created but stayed pending at the payment provider for weeks.",
     "Re-submitted the refund to the provider."),
    ("refund_missing", "Partial refund issued instead of full",
     "Customer returned the full order but only part of the amount was refunded because one line was not "
     "scanned.",
     "Refunded the remaining amount."),
    ("refund_missing", "Refund not triggered after a warehouse scan failure",
     "The returned item was received but the scan failed, so the refund was never triggered.",
     "Fixed the scan record and processed the refund."),
    ("refund_missing", "Refund issued to an expired card",
     "Refund bounced because the customer's card had expired.",
     "Refunded by bank transfer."),
    ("refund_missing", "Refund pending beyond the refund SLA",
     "Return was received more than ten days ago and the refund is still pending.",
     "Processed the refund and apologised."),
    ("refund_missing", "Store credit given instead of card refund",
     "The customer asked for a card refund but received store credit after the return.",
     "Reversed the store credit and refunded to the card."),
    ("no_fault", "Customer not eligible for the loyalty discount",
     "Customer expected the 10% loyalty discount but is Bronze tier with less than three years of loyalty; "
     "no discount was due.",
     "Explained the loyalty policy; no change to the order."),
    ("no_fault", "Pending authorization mistaken for a double charge",
     "Customer saw two charges for the same order; one was a pending card authorization that was released "
     "automatically.",
     "Explained the authorization hold; nothing to refund."),
    ("no_fault", "Refund requested before the return arrived",
     "Customer asked about a refund but the returned parcel had not yet been received by the warehouse.",
     "Explained that the refund follows receipt of the return."),
    ("no_fault", "Delivery within the grace period",
     "Parcel arrived one day after the promised date, within the two-day delivery grace period.",
     "Explained the delivery promise; no claim."),
    ("no_fault", "Duplicate charge already refunded automatically",
     "Customer reported being charged twice, but the duplicate payment had already been refunded by the "
     "automatic reconciliation.",
     "Sent the customer the refund reference; no further action."),
    ("no_fault", "Price shown excluding VAT at checkout",
     "Customer compared a price shown excluding VAT with the invoice total including VAT.",
     "Explained the VAT display; invoice was correct."),
    ("account", "Order placed from an unrecognised device",
     "Customer did not recognise an order placed from an unknown device and delivery address; suspected "
     "account takeover.",
     "Escalated to the fraud team, locked the account and reset the password."),
    ("account", "Request to delete personal data under GDPR",
     "Customer asked to close the account and delete all personal data.",
     "Routed to the privacy team, who handled the erasure request."),
]


def money(x: float) -> float:
    return round(x + 1e-9, 2)


def eligible(tier: str, years: int) -> bool:
    return tier in LOYALTY_TIERS or years >= LOYALTY_MIN_YEARS


def make_customers(rng: random.Random) -> list[dict]:
    customers = []
    for i in range(1, 61):
        joined = date(2016, 1, 1) + timedelta(days=rng.randrange(0, (date(2025, 12, 31) - date(2016, 1, 1)).days))
        customers.append(dict(
            customer_id=f"CU-{i:04d}",
            name=f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            tier=rng.choices(["bronze", "silver", "gold"], weights=[45, 35, 20])[0],
            joined=joined,
            region=rng.choice(REGIONS),
        ))
    return customers


def years_between(joined: date) -> int:
    return math.floor((SNAPSHOT - joined).days / 365.25)


def joined_for(years: int, rng: random.Random) -> date:
    # a join date that gives exactly `years` full years at SNAPSHOT
    return SNAPSHOT - timedelta(days=int(years * 365.25) + rng.randrange(20, 300))


def make_order(rng: random.Random, cust: dict, ordered_at: datetime, amount: float | None = None) -> dict:
    amount = money(rng.uniform(18, 420)) if amount is None else amount
    pct = LOYALTY_PCT if eligible(cust["tier"], cust["loyalty_years"]) else 0.0
    discount = money(amount * pct / 100)
    tax = money((amount - discount) * VAT[cust["region"]])
    promised = (ordered_at + timedelta(days=PROMISE_DAYS)).date()
    return dict(
        customer_id=cust["customer_id"],
        ordered_at=ordered_at,
        amount=amount,
        discount_applied=discount,
        tax=tax,
        total=money(amount - discount + tax),
        payment_ref=f"PAY-{rng.getrandbits(32):08x}",
        shipping_status="delivered",
        promised_by=promised,
        delivered_at=promised - timedelta(days=rng.randrange(0, 3)),
        return_status="none",
        returned_at=None,
        refunded=0.0,
    )


def retax(order: dict, rate: float) -> None:
    order["tax"] = money((order["amount"] - order["discount_applied"]) * rate)
    order["total"] = money(order["amount"] - order["discount_applied"] + order["tax"])


def main() -> None:
    rng = random.Random(SEED)
    customers = make_customers(rng)
    for c in customers:
        c["loyalty_years"] = years_between(c["joined"])

    # Cases: customer CU-0001, CU-0003, ... pinned to what each story needs.
    opened = [datetime(2026, 4, 2, 9, 0) + timedelta(days=round(i * 2.4), minutes=rng.randrange(0, 480))
              for i in range(len(CASES))]
    case_customers = {}
    for i, spec in enumerate(CASES):
        cust = customers[2 * i]
        want = spec["customer"]
        cust["tier"] = want["tier"]
        cust["joined"] = joined_for(want["years"], rng)
        cust["loyalty_years"] = years_between(cust["joined"])
        assert cust["loyalty_years"] == want["years"], (i, cust)
        if "region" in want:
            cust["region"] = want["region"]
        case_customers[i] = cust

    # Background orders: clean, before any case was opened.
    orders = []
    span = (BACKGROUND_TO - BACKGROUND_FROM).total_seconds()
    for cust in customers:
        for _ in range(rng.randint(2, 7)):
            when = BACKGROUND_FROM + timedelta(seconds=rng.randrange(0, int(span)))
            when = when.replace(second=0)
            o = make_order(rng, cust, when)
            if rng.random() < 0.1:  # a clean return: received and refunded in full
                o["return_status"] = "received"
                o["returned_at"] = o["delivered_at"] + timedelta(days=rng.randrange(3, 12))
                o["refunded"] = o["total"]
            orders.append(o)

    # Case orders: the subject order of each case, with its failure injected.
    subjects = {}
    for i, spec in enumerate(CASES):
        cust = case_customers[i]
        ordered_at = (opened[i] - timedelta(days=spec["days"], minutes=rng.randrange(60, 600))).replace(second=0)
        o = make_order(rng, cust, ordered_at)
        extra = []
        kind, arg = (spec["inject"], None) if not isinstance(spec["inject"], tuple) else spec["inject"]
        as_of = opened[i].date()
        if kind in ("no_discount", "no_discount_2"):
            o["discount_applied"] = 0.0
            retax(o, VAT[cust["region"]])
            if kind == "no_discount_2":
                prev = make_order(rng, cust, ordered_at - timedelta(days=11, minutes=rng.randrange(0, 300)))
                prev["discount_applied"] = 0.0
                retax(prev, VAT[cust["region"]])
                extra.append(prev)
        elif kind in ("duplicate", "duplicate_refunded", "triple"):
            copies = 2 if kind == "triple" else 1
            for n in range(1, copies + 1):
                dup = dict(o, payment_ref=f"PAY-{rng.getrandbits(32):08x}", shipping_status="cancelled",
                           delivered_at=None,
                           ordered_at=o["ordered_at"] + timedelta(minutes=(n * 0.5 if kind == "triple" else 2 + n)))
                if kind == "duplicate_refunded":
                    dup["refunded"] = dup["total"]
                extra.append(dup)
        elif kind == "delayed":
            o["shipping_status"], o["delivered_at"] = "delayed", None
        elif kind == "lost":
            o["shipping_status"], o["delivered_at"] = "lost", None
        elif kind == "late_delivered":
            o["delivered_at"] = o["promised_by"] + timedelta(days=5)
        elif kind == "late_within_grace":
            o["delivered_at"] = o["promised_by"] + timedelta(days=1)
        elif kind == "wrong_rate":
            retax(o, arg)
        elif kind in ("return_unrefunded", "partial_refund"):
            o["return_status"] = "received"
            o["returned_at"] = as_of - timedelta(days=arg)
            o["refunded"] = money(o["total"] / 2) if kind == "partial_refund" else 0.0
        elif kind == "return_requested":
            o["return_status"] = "requested"
        elif kind is not None:
            raise ValueError(kind)
        subjects[i] = o
        orders.extend([o, *extra])

    orders.sort(key=lambda o: (o["ordered_at"], o["customer_id"]))
    for n, o in enumerate(orders):
        o["order_id"] = f"O-{50001 + n}"

    cases = []
    for i, spec in enumerate(CASES):
        o, cust = subjects[i], case_customers[i]
        text = spec["text"].format(
            order_id=o["order_id"], ordered=o["ordered_at"].date().isoformat(), amount=f"{o['amount']:.2f}",
            total=f"{o['total']:.2f}", promised=o["promised_by"].isoformat(), years=cust["loyalty_years"],
            joined_year=cust["joined"].year, first=cust["name"].split()[0])
        cases.append(dict(case_id=f"C-{1001 + i}", customer_id=cust["customer_id"],
                          opened_at=opened[i], category=spec["category"], description=text,
                          expected_action=spec["expected"]))

    kb = [dict(kb_id=f"KB-{n:03d}", title=t, category=c, body=b, resolution=r)
          for n, (c, t, b, r) in enumerate(KB, start=1)]

    order_cols = ["order_id", "customer_id", "ordered_at", "amount", "discount_applied", "tax", "total",
                  "payment_ref", "shipping_status", "promised_by", "delivered_at", "return_status",
                  "returned_at", "refunded"]
    write(pd.DataFrame(customers)[["customer_id", "name", "tier", "joined", "region", "loyalty_years"]],
          "customers.csv")
    write(pd.DataFrame(orders)[order_cols], "orders.csv")
    write(pd.DataFrame(cases), "cases.csv")
    write(pd.DataFrame(kb), "kb.csv")


def write(df: pd.DataFrame, name: str) -> None:
    df.to_csv(HERE / name, index=False, float_format="%.2f", date_format="%Y-%m-%d %H:%M:%S", lineterminator="\n")
    print(f"wrote {name}: {len(df)} rows")


if __name__ == "__main__":
    main()
