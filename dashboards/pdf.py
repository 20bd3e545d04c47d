"""An invoice as PDF, drawn with fpdf2 (pure Python) from the same document as the print view
(``dashboards.invoices.invoice_document``): seller and buyer, period, due date and status, the
lines by pool and GPU model, the totals with the amount due emphasised, and how to pay.

Both documents come in the reader's language (the request's, ``organizations.languages``) and
embed a CJK font installed from a Debian package (``fonts-wqy-zenhei``, else ``fonts-noto-cjk``;
``make install``, ``.ci/run`` and the Dockerfile install it), so Chinese labels and companies'
Chinese names are drawn, not replaced. The font has no bold face: bold is drawn by stroking the
glyphs' outlines as well as filling them. Only the glyphs used are embedded (fpdf2 subsets).
"""

import logging
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop
from fpdf import FPDF
from fpdf.enums import TextMode, XPos, YPos

from dashboards.formatting import band, claim_line_status, claim_status, local_time, money, percent, price, time_zone

# Debian's CJK fonts, the first one installed is used (a collection's first face).
CJK_FONTS = [
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf"),
]
FONT = "cjk"
# fontTools says, once per document, that it drops the font's bitmap strikes when subsetting.
logging.getLogger("fontTools.subset").setLevel(logging.ERROR)

# lease, item, band, quantity, unit price, without tax, VAT rate, VAT, amount, voucher: 186 mm
WIDTHS = [16, 30, 14, 22, 20, 22, 12, 16, 20, 14]
RIGHT = {3, 4, 5, 6, 7, 8, 9}


def cjk_font() -> Path:
    for path in CJK_FONTS:
        if path.is_file():
            return path
    raise ImproperlyConfigured(
        "No CJK font for the PDFs: install Debian's fonts-wqy-zenhei (apt-get install -y fonts-wqy-zenhei); "
        f"looked for {', '.join(str(path) for path in CJK_FONTS)}."
    )


def _document(**options: Any) -> FPDF:
    pdf = FPDF(**options)
    pdf.add_font(FONT, "", cjk_font())
    pdf.set_creator("Compute Grid")
    return pdf


def _font(pdf: FPDF, style: str = "", size: float = 10) -> None:
    """The CJK font at ``size``; ``style`` "B" draws it bold (outline stroked as well as filled)."""
    pdf.set_font(FONT, "", size)
    pdf.set_line_width(0.15 if "B" in style else 0.2)
    pdf.text_mode = TextMode.FILL_STROKE if "B" in style else TextMode.FILL


def _text(value: Any) -> str:
    return str(value)


def invoice_pdf(invoice: dict[str, Any]) -> bytes:
    """``invoice``: ``invoice_document``'s dict."""
    pdf = _document(format="A4")
    pdf.set_title(_text(f"{_('Invoice')} {invoice['number'] or _('draft')}"))
    pdf.add_page()
    _font(pdf, "B", 16)
    title = f"{_('Invoice')} {invoice['number']}" if invoice["number"] else _("Draft invoice (usage so far)")
    pdf.cell(0, 10, _text(title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    seller, top = invoice["seller"], pdf.get_y()
    for x, heading, name, code, address in (
        (10, _("Seller"), seller["name"], seller["credit_code"], seller["address"]),
        (105, _("Buyer"), invoice["buyer_name"], invoice["buyer_credit_code"], invoice["buyer_address"]),
    ):
        pdf.set_xy(x, top)
        _font(pdf, "B", 9)
        pdf.cell(90, 5, _text(heading), new_x=XPos.LEFT, new_y=YPos.NEXT)
        _font(pdf, size=9)
        for text in (name, f"{_('Unified social credit code')}: {code}", address):
            pdf.cell(90, 5, _text(text), new_x=XPos.LEFT, new_y=YPos.NEXT)
    pdf.set_xy(10, top + 24)

    status = (
        _("Overdue by %(days)s days") % {"days": invoice["days_overdue"]}
        if invoice["days_overdue"] is not None
        else invoice["status_label"]
    )
    period = f"{local_time(invoice['period_first_day'], 'Y-m-d')} - {local_time(invoice['period_last_day'], 'Y-m-d')}"
    exact = _("%(start)s to %(end)s (%(zone)s)") % {
        "start": local_time(invoice["period_start"]),
        "end": local_time(invoice["period_end"]),
        "zone": time_zone(),
    }
    for label, value in (
        (_("Period"), f"{period}  ({exact})"),
        (_("Issued"), local_time(invoice["finalized_at"]) or "-"),
        (_("Due"), local_time(invoice["due_at"], "Y-m-d") or "-"),
        (_("Status"), status),
        (_("Currency"), invoice["currency"]),
    ):
        _font(pdf, "B" if label == _("Status") and invoice["days_overdue"] is not None else "", 10)
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
        _font(pdf, "B", 10)
        pdf.cell(
            0, 6, _text(f"{group['name']} - {group['gpu_model']} - {group['hub']}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
        _font(pdf, "B", 8)
        for index, (heading, width) in enumerate(zip(headings, WIDTHS, strict=True)):
            pdf.cell(width, 6, _text(heading), border="B", align="R" if index in RIGHT else "L")
        pdf.ln()
        _font(pdf, size=8)
        for line in group["lines"]:
            item = _("GPU card-hours") if line["unit"] == "card_hour" else f"{line['metric']} {line['model']}".strip()
            cells = [
                str(line["lease"])[:8],
                item,
                band(line["band"]),
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
        _font(pdf, "B", 8)
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
        *([(_("Refunded"), "amount_refunded", "")] if invoice["refunded_fen"] else []),
    ):
        due = key == "amount_due"
        _font(pdf, "B" if due else "", 12 if due else 10)
        pdf.cell(150, 8 if due else 6, _text(label), align="R")
        pdf.cell(36, 8 if due else 6, _text(sign + money(invoice[key])), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    _fapiao(pdf, invoice.get("fapiao"))
    if invoice["number"]:
        pdf.ln(4)
        _font(pdf, "B", 10)
        pdf.cell(0, 6, _text(_("How to pay")), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        _font(pdf, size=9)
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
    _font(pdf, "B", 10)
    pdf.cell(0, 6, _text(_("Fapiao")), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    _font(pdf, size=9)
    if fapiao["status"] == "requested":
        text = _("A fapiao is requested; the platform issues it within a few working days.")
    else:
        text = _("Fapiao number %(number)s%(code)s, issued on %(date)s.") % {
            "number": fapiao["number"],
            "code": " (" + _("code %(code)s") % {"code": fapiao["code"]} + ")" if fapiao["code"] else "",
            "date": fapiao["issued_on"],
        }
        if fapiao["status"] == "reversed":
            text += " " + _("Reversed by red-letter fapiao %(number)s on %(date)s.") % {
                "number": fapiao["red_number"],
                "date": fapiao["red_issued_on"],
            }
    pdf.multi_cell(0, 5, _text(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)


CLAIM_COLUMNS = [
    (gettext_noop("Invoice"), 28),
    (gettext_noop("Fapiao"), 34),
    (gettext_noop("Company"), 36),
    (gettext_noop("Taxpayer id"), 34),
    (gettext_noop("Province"), 18),
    (gettext_noop("Provider"), 30),
    (gettext_noop("Hub"), 20),
    (gettext_noop("Usage"), 24),
    (gettext_noop("Line"), 18),
    (gettext_noop("Voucher"), 20),
    (gettext_noop("Status"), 15),
]
CLAIM_TOTALS = [
    (gettext_noop("Claimed"), "claimed"),
    (gettext_noop("Approved"), "approved"),
    (gettext_noop("Rejected"), "rejected"),
    (gettext_noop("Withdrawn"), "withdrawn"),
    (gettext_noop("Received"), "received"),
    (gettext_noop("Due"), "due"),
]


def claim_pdf(claim: dict[str, Any]) -> bytes:
    """``claim``: ``ClaimDetailSerializer`` data plus ``issuer_name``: a subsidy claim with its evidence lines."""
    pdf = _document(orientation="L", format="A4")
    title = _("Subsidy claim %(number)s") % {"number": claim["number"]}
    pdf.set_title(title)
    pdf.add_page()
    _font(pdf, "B", 16)
    pdf.cell(0, 10, _text(title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    _font(pdf, size=10)
    status = claim_status(claim["status"])
    for label, value in (
        (_("Issuer"), f"{claim['issuer_name']} ({claim['issuer']})"),
        (_("Program"), claim["program_name"]),
        (
            _("Redeemed"),
            _("%(start)s to %(end)s (%(zone)s)")
            % {"start": local_time(claim["period_start"]), "end": local_time(claim["period_end"]), "zone": time_zone()},
        ),
        (_("Status"), _("%(status)s (overdue)") % {"status": status} if claim["overdue"] else status),
        (_("Currency"), claim["currency"]),
    ):
        pdf.cell(35, 6, _text(label))
        pdf.cell(0, 6, _text(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    _font(pdf, "B", 8)
    for heading, width in CLAIM_COLUMNS:
        pdf.cell(width, 7, _text(_(heading)), border="B")
    pdf.ln()
    _font(pdf, size=7)
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
            claim_line_status(line["status"]),
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
                _text(
                    "    "
                    + _("rejected: %(code)s %(reason)s") % {"code": line["reason_code"], "reason": line["reason"]}
                ),
                new_x=XPos.LMARGIN,
                new_y=YPos.NEXT,
            )
    pdf.ln(4)
    _font(pdf, size=10)
    for label, key in CLAIM_TOTALS:
        pdf.cell(230, 6, _text(_(label)), align="R")
        pdf.cell(40, 6, _text(money(claim[key])), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())
