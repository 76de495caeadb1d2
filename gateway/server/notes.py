"""Free text people give the gateway: an officer's comment and reference, a sender's justification.

Such text reaches the audit log, the sender and the reviewer, which never
hold a matched value (SPEC §3.2): it is bounded, free of control and format
characters, its white space folded, and refused when the classifier finds
anything in it.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from gateway.classify.detectors import DetectorSet
from gateway.errors import ClientError

#: The longest comment or justification, in characters.
MAX_NOTE_CHARS: Final = 500
#: The longest reference (a filing or ticket number), in characters.
MAX_REFERENCE_CHARS: Final = 100


def clean_note(
    text: object, what: str, detectors: DetectorSet, secret: bytes, *, most: int = MAX_NOTE_CHARS
) -> str:
    """``text`` checked and folded to single spaces.

    Raises:
        ClientError: not a text of 1 to ``most`` characters, a control or format
            character in it, or something the classifier finds (400). The
            message names ``what``, never the text.
    """
    if not isinstance(text, str) or not text.strip() or len(text) > most:
        raise ClientError(f"{what}: a text of 1 to {most} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf") and c not in "\t\n\r" for c in text):
        raise ClientError(f"{what}: no control or format characters")
    from gateway.classify.engine import Scanner  # the classifier only when there is text

    scanner = Scanner(detectors, secret)
    try:
        if scanner.scan_name(text):
            raise ClientError(
                f"{what}: it holds a value the classifier finds (an identifier, a "
                f"credential …); write the {what} without it"
            )
    finally:
        scanner.close()
    return " ".join(text.split())
