"""The entity types the detector knows, and the patterns of those it finds by form alone.

Personal data with a checksum or a fixed form comes from Presidio's own recognizers (credit
cards with Luhn, IBANs with their check digits, national ids with their rules); person names
from spaCy's named-entity model; phone numbers from libphonenumber. Secrets (`_SECRETS`) have
no recognizer in Presidio: their patterns follow the forms providers document, the way
secret scanners (gitleaks, detect-secrets) find them."""

from __future__ import annotations

# Personal data.
PII = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "UK_NINO",
    "ES_NIF",
    "IT_FISCAL_CODE",
    "IN_AADHAAR",
    "STREET_ADDRESS",
    "IP_ADDRESS",
)
SECRETS = ("API_KEY", "ACCESS_TOKEN", "PRIVATE_KEY", "PASSWORD")
ENTITIES = PII + SECRETS
DEFAULT_ENTITIES = tuple(e for e in ENTITIES if e != "IP_ADDRESS")

# name -> (regex, score). Lookbehinds keep a label ("password: ") out of the masked value.
_KEY_LABEL = r"(?i:api[_-]?key|secret[_-]?key|access[_-]?key|client[_-]?secret|auth[_-]?token)"
SECRET_PATTERNS: dict[str, list[tuple[str, float]]] = {
    "API_KEY": [
        (r"\bsk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d\d-)?[A-Za-z0-9_-]{20,}", 0.95),
        (r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b", 0.95),  # AWS access key ids
        (r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b", 0.95),  # GitHub
        (r"\bgithub_pat_[A-Za-z0-9_]{22,}\b", 0.95),
        (r"\bglpat-[A-Za-z0-9_-]{20,}\b", 0.95),  # GitLab
        (r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b", 0.95),  # Slack
        (r"\bAIza[0-9A-Za-z_-]{35}\b", 0.95),  # Google
        (r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}\b", 0.95),  # Stripe
        (r"\bhf_[A-Za-z0-9]{30,}\b", 0.9),  # Hugging Face
        (r"\bnpm_[A-Za-z0-9]{36}\b", 0.9),
        (rf"(?<={_KEY_LABEL}[\"']?\s*(?:is|[:=])\s*[\"']?)[A-Za-z0-9_\-./+]{{16,}}", 0.8),
        (r"(?i)(?<=aws_secret_access_key\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{40}", 0.9),
    ],
    "ACCESS_TOKEN": [
        (r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", 0.95),  # JWT
        (r"(?<=\b[Bb]earer\s+)[A-Za-z0-9._~+/-]{20,}=*", 0.85),
    ],
    "PRIVATE_KEY": [
        (
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]+?"
            r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
            1.0,
        ),
    ],
    "PASSWORD": [
        (
            r"(?i)(?<=\b(?:password|passwd|pwd|passphrase|passcode)\s*(?:is|[:=])\s*[\"']?)"
            r"[^\s\"',;]{6,}",
            0.8,
        ),
    ],
}

_STREET = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|"
    r"Square|Sq|Terrace|Parkway|Pkwy|Highway|Hwy|Close|Crescent|Row|Gardens)"
)
ADDRESS_PATTERNS: list[tuple[str, float]] = [
    # "221B Baker Street", "1600 Pennsylvania Avenue NW, Washington, DC 20500"
    (
        rf"\b\d{{1,5}}[A-Za-z]?,?\s+(?:[A-Z][a-z]+\.?\s+){{1,3}}{_STREET}\b"
        r"(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?"
        r"(?:,?\s+(?:Apt|Suite|Unit|Flat)\.?\s*\w+)?",
        0.7,
    ),
    # "Hauptstraße 5", "Rue de Rivoli 12" style: the number after the street
    (
        r"\b[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|str\.|weg|gasse|platz|allee|ring)\s+"
        r"\d{1,4}[a-z]?\b",
        0.7,
    ),
]
EMAIL_PATTERN = (
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}\b"
)
# Candidates for libphonenumber, which then decides (a valid number for some region).
PHONE_CANDIDATE = r"(?<![\w+])(?:\+|00)?\(?\d[\d\s().\-/]{6,18}\d(?![\w])"
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN", "CA", "BR", "ES", "IT", "NL", "AU")
