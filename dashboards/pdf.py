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
