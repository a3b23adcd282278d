"""Pricing metered usage: exact quantities, cents rounded per line, totals that
add the lines, proration by hours held, and price lists refused clearly."""

import pytest

from basalt import billing

USAGE = {"account": "000000000000", "account_name": "root",
         "byte_hours": 730 * 10**9 * 2,        # 2 GB held all month
         "requests_put": 1500, "requests_get": 10_001, "requests_free": 99,
         "bytes_in": 5 * 10**9, "bytes_out": 3 * 10**9 + 5 * 10**8,
         "provisioned_gb_hours": 365.0, "allocated_gb_hours": 100.0,
         "snapshot_gb_hours": 0, "vcpu_hours": 10.5, "memory_gb_hours": 21.0, "nat_bytes": 0}


def prices_file(tmp_path, text):
    path = tmp_path / "prices.toml"
    path.write_text(text)
    return str(path)


def test_lines_totals_and_rounding(tmp_path):
    currency, prices = billing.load_prices(prices_file(tmp_path, """
currency = "EUR"
storage_gb_month = 0.023
requests_put_per_1000 = 0.005
requests_get_per_1000 = 0.0004
bytes_out_per_gb = 0.09
volume_gb_month = 0.08
snapshot_gb_month = 0.05
vcpu_hour = 0.0104
memory_gb_hour = 0.0052
"""))
    doc = billing.bill([USAGE], prices, currency, "2026-11")
    lines = {line["item"]: line for line in doc["accounts"][0]["lines"]}
    assert lines["storage_gb_month"]["quantity"] == 2.0
    assert lines["storage_gb_month"]["amount"] == 0.05          # 0.046 rounds half-up
    assert lines["requests_put_per_1000"]["amount"] == 0.01     # 1.5 x 0.005 = 0.0075
    assert lines["requests_get_per_1000"]["quantity"] == 10.001
    assert lines["bytes_out_per_gb"]["amount"] == 0.32          # 3.5 GB x 0.09 = 0.315
    assert lines["volume_gb_month"]["quantity"] == 0.5          # 365 GB-hours: half a month
    assert lines["vcpu_hour"]["amount"] == 0.11                 # 0.1092
    assert "snapshot_gb_month" not in lines                     # nothing used: no line
    assert doc["accounts"][0]["total"] == round(sum(x["amount"] for x in lines.values()), 2)
    assert doc["total"] == doc["accounts"][0]["total"] and doc["currency"] == "EUR"
    text = billing.render_table(doc)
    assert "Object storage" in text and "730 hours" in text
    page = billing.render_html(doc)
    assert page.startswith("<!doctype html>") and "<script" not in page
    rows = billing.csv_rows(doc)
    assert rows[0][:4] == ["month", "account", "account_name", "item"] and len(rows) == 1 + len(lines)


def test_month_spans():
    start, end = billing.month_span("2026-02")
    assert (start.isoformat(), end.isoformat()) == ("2026-02-01T00:00:00+00:00",
                                                    "2026-03-01T00:00:00+00:00")
    assert billing.month_span("2026-12")[1].isoformat() == "2027-01-01T00:00:00+00:00"
    with pytest.raises(billing.PriceListError):
        billing.month_span("2026-13")


@pytest.mark.parametrize("text, message", [
    ("storage_gb_month = ", "not TOML"),
    ("storage_gb_month = -1", ">= 0"),
    ("storage_gb_month = 'x'", ">= 0"),
    ("disk_gb_month = 1", "unknown price disk_gb_month"),
    ("currency = 3", "currency"),
])
def test_bad_price_lists(tmp_path, text, message):
    with pytest.raises(billing.PriceListError, match=message):
        billing.load_prices(prices_file(tmp_path, text))
    with pytest.raises(billing.PriceListError, match="missing.toml"):
        billing.load_prices(str(tmp_path / "missing.toml"))
