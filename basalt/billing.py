"""Cost reports: metered usage priced from a price list.

The price list is flat TOML (``currency`` and a price per unit for any of
:data:`PRICES`). A GB is 10^9 bytes and a month 730 hours: stored bytes are
metered in byte-hours, so a partial month is prorated by the hours something
was held, and a GB-month is 730 GB-hours. Quantities are kept exact (to the
metered precision); each line's amount is rounded half-up to the cent, and an
account's total is the sum of its rounded lines, so the lines always add up.
"""

from __future__ import annotations

import calendar
import html
import tomllib
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

HOURS_PER_MONTH = Decimal(730)
GB = Decimal(10**9)
CENT = Decimal("0.01")
NOTE = ("A GB is 10^9 bytes and a month 730 hours; storage is prorated by the hours it "
        "was held; each line is rounded half-up to the cent and totals add the lines.")


def _d(value: Any) -> Decimal:
    return Decimal(str(value or 0))


# price key → (description, unit, quantity from an account's usage row)
PRICES: dict[str, tuple[str, str, Any]] = {
    "storage_gb_month": ("Object storage", "GB-month",
                         lambda u: _d(u["byte_hours"]) / GB / HOURS_PER_MONTH),
    "requests_put_per_1000": ("PUT, COPY, POST and LIST requests", "1,000 requests",
                              lambda u: _d(u["requests_put"]) / 1000),
    "requests_get_per_1000": ("GET, HEAD and other requests", "1,000 requests",
                              lambda u: _d(u["requests_get"]) / 1000),
    "bytes_out_per_gb": ("Data transfer out", "GB", lambda u: _d(u["bytes_out"]) / GB),
    "volume_gb_month": ("Volumes (provisioned)", "GB-month",
                        lambda u: _d(u["provisioned_gb_hours"]) / HOURS_PER_MONTH),
    "snapshot_gb_month": ("Volume snapshots", "GB-month",
                          lambda u: _d(u["snapshot_gb_hours"]) / HOURS_PER_MONTH),
    "vcpu_hour": ("VM vCPUs", "vCPU-hour", lambda u: _d(u["vcpu_hours"])),
    "memory_gb_hour": ("VM memory", "GB-hour", lambda u: _d(u["memory_gb_hours"])),
    "nat_per_gb": ("Data through NAT", "GB", lambda u: _d(u["nat_bytes"]) / GB),
}


class PriceListError(Exception):
    """The price list cannot be used; the message says why."""


def load_prices(path: str) -> tuple[str, dict[str, Decimal]]:
    """(currency, price per unit by key) from a TOML price list."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise PriceListError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PriceListError(f"{path} is not TOML: {exc}") from None
    currency = raw.pop("currency", "USD")
    if not isinstance(currency, str):
        raise PriceListError(f"{path}: currency must be a string")
    unknown = sorted(set(raw) - set(PRICES))
    if unknown:
        raise PriceListError(f"{path}: unknown price {', '.join(unknown)} "
                             f"(known: {', '.join(PRICES)})")
    prices = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise PriceListError(f"{path}: {key} must be a number >= 0")
        prices[key] = Decimal(str(value))
    return currency, prices


def month_span(month: str) -> tuple[datetime, datetime]:
    """The first moment of ``YYYY-MM`` and of the month after it (UTC)."""
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise PriceListError(f"not a month (YYYY-MM): {month!r}") from None
    days = calendar.monthrange(start.year, start.month)[1]
    end = start.replace(day=days, hour=23, minute=59, second=59)
    return start, datetime.fromtimestamp(end.timestamp() + 1, UTC)


def bill(usage_rows: list[dict[str, Any]], prices: dict[str, Decimal], currency: str,
         month: str) -> dict[str, Any]:
    """The bill: per account, a line per priced item used, and the totals."""
    accounts = []
    for usage in usage_rows:
        lines = []
        for key, price in prices.items():
            what, unit, quantity_of = PRICES[key]
            quantity = quantity_of(usage)
            if not quantity:
                continue
            amount = (quantity * price).quantize(CENT, ROUND_HALF_UP)
            lines.append({"item": key, "description": what, "unit": unit,
                          "quantity": float(round(quantity, 6)), "unit_price": float(price),
                          "amount": float(amount)})
        total = sum((Decimal(str(line["amount"])) for line in lines), Decimal(0))
        accounts.append({"account": usage["account"],
                         "account_name": usage.get("account_name", ""),
                         "lines": lines, "total": float(total)})
    grand = sum((Decimal(str(a["total"])) for a in accounts), Decimal(0))
    return {"month": month, "currency": currency, "accounts": accounts, "total": float(grand),
            "note": NOTE}


def render_table(doc: dict[str, Any]) -> str:
    cur = doc["currency"]
    out = [f"Bill for {doc['month']} ({cur})"]
    for account in doc["accounts"]:
        out.append(f"\n{account['account_name'] or account['account']} ({account['account']})")
        for line in account["lines"]:
            out.append(f"  {line['description']:<36} {line['quantity']:>16,.6f} {line['unit']:<15}"
                       f" x {line['unit_price']:<10g} = {line['amount']:>12,.2f}")
        out.append(f"  {'total':<36} {'':>16} {'':<15}   {'':<10} = {account['total']:>12,.2f}")
    out.append(f"\ntotal: {doc['total']:,.2f} {cur}")
    out.append(doc["note"])
    return "\n".join(out)


def csv_rows(doc: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = [["month", "account", "account_name", "item", "description",
                              "quantity", "unit", "unit_price", "amount", "currency"]]
    for account in doc["accounts"]:
        for line in account["lines"]:
            rows.append([doc["month"], account["account"], account["account_name"],
                         line["item"], line["description"], line["quantity"], line["unit"],
                         line["unit_price"], line["amount"], doc["currency"]])
    return rows


def render_html(doc: dict[str, Any]) -> str:
    """A standalone HTML page (no scripts, no outside resources)."""
    e = html.escape
    cur = e(doc["currency"])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Basalt bill "
             f"{e(doc['month'])}</title><style>body{{font-family:sans-serif}}table{{"
             f"border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}"
             f"td.n{{text-align:right}}</style></head><body>",
             f"<h1>Bill for {e(doc['month'])}</h1>"]
    for account in doc["accounts"]:
        parts.append(f"<h2>{e(account['account_name'] or account['account'])} "
                     f"<small>{e(account['account'])}</small></h2><table><tr><th>Item</th>"
                     f"<th>Quantity</th><th>Unit</th><th>Unit price</th>"
                     f"<th>Amount ({cur})</th></tr>")
        for line in account["lines"]:
            parts.append(f"<tr><td>{e(line['description'])}</td><td class=n>"
                         f"{line['quantity']:,.6f}</td><td>{e(line['unit'])}</td>"
                         f"<td class=n>{line['unit_price']:g}</td><td class=n>"
                         f"{line['amount']:,.2f}</td></tr>")
        parts.append(f"<tr><th colspan=4>Total</th><td class=n><b>{account['total']:,.2f}"
                     f"</b></td></tr></table>")
    parts.append(f"<p><b>Total: {doc['total']:,.2f} {cur}</b></p><p>{e(doc['note'])}</p>"
                 f"</body></html>")
    return "".join(parts)
