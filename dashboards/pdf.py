"""An invoice as PDF, drawn with fpdf2 (pure Python) from the API's own representation.

The built-in PDF fonts cover Latin-1 only: any other character (a company's
Chinese name, say) is written as "?" rather than failing the download.
"""

from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from dashboards.formatting import local_time, time_zone

COLUMNS = [("Lease", 62), ("Metric", 30), ("Band", 16), ("Quantity", 26), ("Rate", 26), ("Amount", 26)]
TOTALS = [
    ("Subtotal", "subtotal"),
    ("Voucher credit", "voucher_credit"),
    ("Compute bank credit", "bank_credit"),
    ("Amount due", "amount_due"),
    ("Amount paid", "amount_paid"),
]


def _text(value: Any) -> str:
    return str(value).encode("latin-1", "replace").decode("latin-1")


def invoice_pdf(invoice: dict[str, Any]) -> bytes:
    """``invoice``: ``InvoiceSerializer`` data plus ``buyer_name``."""
    pdf = FPDF(format="A4")
    pdf.set_title(_text(f"Invoice {invoice['number'] or 'draft'}"))
    pdf.set_creator("Compute Grid")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    title = f"Invoice {invoice['number']}" if invoice["number"] else "Draft invoice (usage so far)"
    pdf.cell(0, 10, _text(title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=10)
    for label, value in (
        ("Billed to", f"{invoice['buyer_name']} ({invoice['buyer']})"),
        ("Period", f"{local_time(invoice['period_start'])} to {local_time(invoice['period_end'])} ({time_zone()})"),
        ("Status", invoice["status"]),
        ("Currency", invoice["currency"]),
        ("Finalized", local_time(invoice["finalized_at"]) or "-"),
    ):
        pdf.cell(35, 6, _text(label))
        pdf.cell(0, 6, _text(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 9)
    for heading, width in COLUMNS:
        pdf.cell(width, 7, heading, border="B", align="R" if width == 26 else "L")
    pdf.ln()
    pdf.set_font("Helvetica", size=8)
    for line in invoice["lines"]:
        metric = line["metric"] + (f" {line['model']}" if line["model"] else "")
        cells = [str(line["lease"]), metric, line["band"], line["quantity"], line["rate"], line["amount"]]
        for (_, width), cell in zip(COLUMNS, cells, strict=True):
            pdf.cell(width, 6, _text(cell), align="R" if width == 26 else "L")
        pdf.ln()
    pdf.ln(4)
    pdf.set_font("Helvetica", size=10)
    for label, key in TOTALS:
        pdf.cell(160, 6, label, align="R")
        pdf.cell(26, 6, _text(invoice[key]), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())


CLAIM_COLUMNS = [
    ("Invoice", 30),
    ("Company", 46),
    ("Credit code", 34),
    ("Province", 22),
    ("Provider", 40),
    ("Hub", 22),
    ("Usage", 28),
    ("Line", 20),
    ("Voucher", 20),
    ("Status", 15),
]
CLAIM_TOTALS = [
    ("Claimed", "claimed"),
    ("Approved", "approved"),
    ("Rejected", "rejected"),
    ("Withdrawn", "withdrawn"),
    ("Received", "received"),
    ("Due", "due"),
]


def claim_pdf(claim: dict[str, Any]) -> bytes:
    """``claim``: ``ClaimDetailSerializer`` data plus ``issuer_name``: a subsidy claim with its evidence lines."""
    pdf = FPDF(orientation="L", format="A4")
    pdf.set_title(_text(f"Subsidy claim {claim['number']}"))
    pdf.set_creator("Compute Grid")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, _text(f"Subsidy claim {claim['number']}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=10)
    for label, value in (
        ("Issuer", f"{claim['issuer_name']} ({claim['issuer']})"),
        ("Program", claim["program_name"]),
        ("Redeemed", f"{local_time(claim['period_start'])} to {local_time(claim['period_end'])} ({time_zone()})"),
        ("Status", claim["status"] + (" (overdue)" if claim["overdue"] else "")),
        ("Currency", claim["currency"]),
    ):
        pdf.cell(35, 6, _text(label))
        pdf.cell(0, 6, _text(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 8)
    for heading, width in CLAIM_COLUMNS:
        pdf.cell(width, 7, heading, border="B")
    pdf.ln()
    pdf.set_font("Helvetica", size=7)
    for line in claim["lines"]:
        usage = f"{line['usage_quantity'] or ''} {line['usage_unit']}".strip()
        cells = [
            line["invoice_number"] or "-",
            line["company"],
            line["company_credit_code"],
            line["company_province"],
            line["provider"],
            line["hub"],
            usage,
            line["line_amount"],
            line["voucher_share"],
            line["status"],
        ]
        for (_, width), cell in zip(CLAIM_COLUMNS, cells, strict=True):
            pdf.cell(width, 5, _text(cell)[: width // 2])
        pdf.ln()
        if line["reason_code"]:
            pdf.cell(
                0,
                5,
                _text(f"    rejected: {line['reason_code']} {line['reason']}"),
                new_x=XPos.LMARGIN,
                new_y=YPos.NEXT,
            )
    pdf.ln(4)
    pdf.set_font("Helvetica", size=10)
    for label, key in CLAIM_TOTALS:
        pdf.cell(230, 6, label, align="R")
        pdf.cell(40, 6, _text(claim[key]), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())
