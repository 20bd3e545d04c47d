"""An invoice as PDF, drawn with fpdf2 (pure Python) from the same document as the print view
(``dashboards.invoices.invoice_document``): seller and buyer, period, due date and status, the
lines by pool and GPU model, the totals with the amount due emphasised, and how to pay.

The built-in PDF fonts cover Latin-1 only: any other character (a company's Chinese name, say)
is written as "?" rather than failing the download.
"""

from typing import Any

from django.utils.translation import gettext as _
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from dashboards.formatting import local_time, money, percent, price, time_zone

# lease, item, band, quantity, unit price, without tax, VAT rate, VAT, amount, voucher: 186 mm
WIDTHS = [16, 30, 14, 22, 20, 22, 12, 16, 20, 14]
RIGHT = {3, 4, 5, 6, 7, 8, 9}


def _text(value: Any) -> str:
    return str(value).encode("latin-1", "replace").decode("latin-1")


def invoice_pdf(invoice: dict[str, Any]) -> bytes:
    """``invoice``: ``invoice_document``'s dict."""
    pdf = FPDF(format="A4")
    pdf.set_title(_text(f"{_('Invoice')} {invoice['number'] or _('draft')}"))
    pdf.set_creator("Compute Grid")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    title = f"{_('Invoice')} {invoice['number']}" if invoice["number"] else _("Draft invoice (usage so far)")
    pdf.cell(0, 10, _text(title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    seller, top = invoice["seller"], pdf.get_y()
    for x, heading, name, code, address in (
        (10, _("Seller"), seller["name"], seller["credit_code"], seller["address"]),
        (105, _("Buyer"), invoice["buyer_name"], invoice["buyer_credit_code"], invoice["buyer_address"]),
    ):
        pdf.set_xy(x, top)
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(90, 5, _text(heading), new_x=XPos.LEFT, new_y=YPos.NEXT)
        pdf.set_font("Helvetica", size=9)
        for text in (name, f"{_('Unified social credit code')}: {code}", address):
            pdf.cell(90, 5, _text(text), new_x=XPos.LEFT, new_y=YPos.NEXT)
    pdf.set_xy(10, top + 24)

    status = (
        _("Overdue by %(days)s days") % {"days": invoice["days_overdue"]}
        if invoice["days_overdue"] is not None
        else invoice["status"]
    )
    period = f"{local_time(invoice['period_first_day'], 'Y-m-d')} - {local_time(invoice['period_last_day'], 'Y-m-d')}"
    exact = f"{local_time(invoice['period_start'])} to {local_time(invoice['period_end'])} ({time_zone()})"
    for label, value in (
        (_("Period"), f"{period}  ({exact})"),
        (_("Issued"), local_time(invoice["finalized_at"]) or "-"),
        (_("Due"), local_time(invoice["due_at"], "Y-m-d") or "-"),
        (_("Status"), status),
        (_("Currency"), invoice["currency"]),
    ):
        pdf.set_font("Helvetica", "B" if label == _("Status") and invoice["days_overdue"] is not None else "", 10)
        pdf.cell(35, 6, _text(label))
        pdf.cell(0, 6, _text(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    headings = [
        _("Lease"),
        _("Item"),
        _("Band"),
        _("Card-hours"),
        _("Unit price"),
        _("Without tax"),
        _("VAT rate"),
        _("VAT"),
        _("Amount"),
        _("Voucher"),
    ]
    for group in invoice["groups"]:
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(
            0, 6, _text(f"{group['name']} - {group['gpu_model']} - {group['hub']}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
        pdf.set_font("Helvetica", "B", 8)
        for index, (heading, width) in enumerate(zip(headings, WIDTHS, strict=True)):
            pdf.cell(width, 6, _text(heading), border="B", align="R" if index in RIGHT else "L")
        pdf.ln()
        pdf.set_font("Helvetica", size=8)
        for line in group["lines"]:
            item = _("GPU card-hours") if line["unit"] == "card_hour" else f"{line['metric']} {line['model']}".strip()
            cells = [
                str(line["lease"])[:8],
                item,
                line["band"],
                f"{float(line['quantity']):,.2f}",
                price(line["rate"]),
                money(line["amount_without_tax"]),
                percent(line["vat_rate"]),
                money(line["tax"]),
                money(line["amount"]),
                money(line["voucher_amount"]),
            ]
            for index, (cell, width) in enumerate(zip(cells, WIDTHS, strict=True)):
                pdf.cell(width, 5, _text(cell), align="R" if index in RIGHT else "L")
            pdf.ln()
        pdf.set_font("Helvetica", "B", 8)
        pdf.cell(sum(WIDTHS[:3]), 5, _text(_("Subtotal of the pool")), border="T")
        pdf.cell(WIDTHS[3], 5, f"{float(group['card_hours']):,.2f}", border="T", align="R")
        pdf.cell(sum(WIDTHS[4:8]), 5, "", border="T")
        pdf.cell(WIDTHS[8], 5, _text(money(group["amount"])), border="T", align="R")
        pdf.cell(WIDTHS[9], 5, "", border="T", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    pdf.ln(4)
    for label, key, sign in (
        (_("Amount without tax"), "subtotal_without_tax", ""),
        (_("VAT"), "tax", ""),
        (_("Subtotal (tax included)"), "subtotal", ""),
        (_("Compute vouchers"), "voucher_credit", "-"),
        (_("Compute bank credit"), "bank_credit", "-"),
        (_("Amount due"), "amount_due", ""),
        (_("Paid"), "amount_paid", ""),
    ):
        due = key == "amount_due"
        pdf.set_font("Helvetica", "B" if due else "", 12 if due else 10)
        pdf.cell(150, 8 if due else 6, _text(label), align="R")
        pdf.cell(36, 8 if due else 6, _text(sign + money(invoice[key])), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    _fapiao(pdf, invoice.get("fapiao"))
    if invoice["number"]:
        pdf.ln(4)
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(0, 6, _text(_("How to pay")), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("Helvetica", size=9)
        bank = invoice["bank"]
        pdf.multi_cell(
            0,
            5,
            _text(
                _(
                    "By bank transfer to %(seller)s, account %(account)s at %(bank)s, with the invoice number "
                    "%(number)s as the reference. By card: the card on file is charged when the invoice is issued."
                )
                % {
                    "seller": seller["name"],
                    "account": bank["account"],
                    "bank": bank["name"],
                    "number": invoice["number"],
                }
            ),
        )
    return bytes(pdf.output())


def _fapiao(pdf: FPDF, fapiao: dict[str, Any] | None) -> None:
    """The fapiao issued for the invoice (and its red-letter reversal), or that one is requested."""
    if not fapiao or fapiao["status"] == "cancelled":
        return
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(0, 6, _text(_("Fapiao")), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=9)
    if fapiao["status"] == "requested":
        text = _("A fapiao is requested; the platform issues it within a few working days.")
    else:
        text = _("Fapiao number %(number)s%(code)s, issued on %(date)s.") % {
            "number": fapiao["number"],
            "code": f" ({_('code')} {fapiao['code']})" if fapiao["code"] else "",
            "date": fapiao["issued_on"],
        }
        if fapiao["status"] == "reversed":
            text += " " + _("Reversed by red-letter fapiao %(number)s on %(date)s.") % {
                "number": fapiao["red_number"],
                "date": fapiao["red_issued_on"],
            }
    pdf.multi_cell(0, 5, _text(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)


CLAIM_COLUMNS = [
    ("Invoice", 28),
    ("Fapiao", 34),
    ("Company", 36),
    ("Taxpayer id", 34),
    ("Province", 18),
    ("Provider", 30),
    ("Hub", 20),
    ("Usage", 24),
    ("Line", 18),
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
        pdf.cell(35, 6, _text(_(label)))
        pdf.cell(0, 6, _text(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 8)
    for heading, width in CLAIM_COLUMNS:
        pdf.cell(width, 7, _text(_(heading)), border="B")
    pdf.ln()
    pdf.set_font("Helvetica", size=7)
    for line in claim["lines"]:
        usage = f"{line['usage_quantity'] or ''} {line['usage_unit']}".strip()
        cells = [
            line["invoice_number"] or "-",
            line["fapiao_numbers"] or "-",
            line["company"],
            line["company_taxpayer_id"],
            line["company_province"],
            line["provider"],
            line["hub"],
            usage,
            money(line["line_amount"]),
            money(line["voucher_share"]),
            line["status"],
        ]
        for (heading, width), cell in zip(CLAIM_COLUMNS, cells, strict=True):
            # digits and capitals are narrow enough: a fapiao number (or code-number) and an 18-character
            # taxpayer id are shown whole
            pdf.cell(width, 5, _text(cell)[: 24 if heading in ("Fapiao", "Taxpayer id") else width // 2])
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
        pdf.cell(230, 6, _text(_(label)), align="R")
        pdf.cell(40, 6, _text(money(claim[key])), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())
