"""`basalt bill --prices FILE.toml`: a month's metered usage, priced, per account."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from ..billing import bill, csv_rows, load_prices, month_span, render_html, render_table
from .common import admin_client

USAGE = "/_basalt/v1/usage"


def cmd_bill(args: argparse.Namespace) -> int:
    currency, prices = load_prices(args.prices)
    month = args.month or time.strftime("%Y-%m", time.gmtime())
    start, end = month_span(month)
    query = {"since": start.isoformat(), "until": end.isoformat(), "by": "account"}
    if args.account:
        query["account"] = args.account
    rows = admin_client(args).call("GET", USAGE, query=query)
    doc = bill(rows, prices, currency, month)
    form = "json" if args.json else args.format
    if form == "json":
        print(json.dumps(doc))
    elif form == "csv":
        csv.writer(sys.stdout, lineterminator="\n").writerows(csv_rows(doc))
    elif form == "html":
        print(render_html(doc))
    else:
        print(render_table(doc))
    return 0


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the ``bill`` command to the CLI."""
    p = add(sub, "bill", help="a month's usage priced from a price list, per account")
    p.add_argument("--prices", required=True, metavar="FILE.toml",
                   help="flat TOML: currency and a price per unit (storage_gb_month, "
                        "requests_put_per_1000, requests_get_per_1000, bytes_out_per_gb, "
                        "volume_gb_month, snapshot_gb_month, vcpu_hour, memory_gb_hour, "
                        "nat_per_gb)")
    p.add_argument("--month", metavar="YYYY-MM", help="the month (default: this month so far)")
    p.add_argument("--account", help="one account (name or id); default: every account")
    p.add_argument("--format", choices=("table", "csv", "json", "html"), default="table")
    p.set_defaults(func=cmd_bill)
