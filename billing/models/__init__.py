from billing.models.bank import Bank, BankEvent, BankMovement, CreditGrant, CreditHold, TopUp
from billing.models.fapiao import FapiaoFile, FapiaoRequest
from billing.models.invoices import (
    DepositResale,
    Invoice,
    InvoiceAdjustment,
    InvoiceLine,
    InvoiceSequence,
    ProviderStatement,
)
from billing.models.ledger import Account, JournalEntry, Leg
from billing.models.payments import PaymentAttempt, Refund, StripeCustomer, StripeEvent, UnprocessableWebhook
from billing.models.usage import UsageEvent, UsageMetric, UsageRollup, UsageRollupDue

__all__ = [
    "Account",
    "Bank",
    "BankEvent",
    "BankMovement",
    "CreditGrant",
    "CreditHold",
    "DepositResale",
    "FapiaoFile",
    "FapiaoRequest",
    "Invoice",
    "InvoiceAdjustment",
    "InvoiceLine",
    "InvoiceSequence",
    "JournalEntry",
    "Leg",
    "PaymentAttempt",
    "ProviderStatement",
    "Refund",
    "StripeCustomer",
    "StripeEvent",
    "TopUp",
    "UnprocessableWebhook",
    "UsageEvent",
    "UsageMetric",
    "UsageRollup",
    "UsageRollupDue",
]
