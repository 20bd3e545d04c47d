"""The unified social credit code (统一社会信用代码), GB 32100-2015.

18 characters from a 31-character alphabet (digits and capitals without
I, O, Z, S, V); the last one is a check character over the first 17.
"""

from django.core.exceptions import ValidationError
from django.utils.translation import gettext

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def credit_code_check_char(first17: str) -> str:
    total = sum(ALPHABET.index(char) * weight for char, weight in zip(first17, WEIGHTS, strict=True))
    return ALPHABET[(31 - total % 31) % 31]


def validate_credit_code(value: str) -> None:
    if len(value) != 18:
        raise ValidationError(
            gettext("A unified social credit code has 18 characters; this one has %(n)s."),
            code="invalid_credit_code",
            params={"n": len(value)},
        )
    bad = sorted({char for char in value if char not in ALPHABET})
    if bad:
        raise ValidationError(
            gettext(
                "A unified social credit code uses digits and capital letters other than I, O, Z, S, V; found %(bad)s."
            ),
            code="invalid_credit_code",
            params={"bad": ", ".join(bad)},
        )
    if credit_code_check_char(value[:17]) != value[17]:
        raise ValidationError(
            gettext("The check character of this unified social credit code is wrong; check for a typo."),
            code="invalid_credit_code",
        )
