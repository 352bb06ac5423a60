"""Text a user types (a title, or a question around one), made what training saw before anything reads it.

Every way a title comes in at generation time (`tc3-generate --title`, its interactive loop, a text or JSONL
`--input` file, the demo page and its API) passes through :func:`accept`: a length bound checked first, so that
no single request can hold the service (a 92,000-character title once became a 40,037-token prompt), then the
engine's own cleaning of titles (`tc3._rust_clean.clean_title`, docs/cleaning.md rules 1-4: entities decoded,
HTML tags and script/style elements removed, NFC, white space), the one rule set `tc3-prep` applied to the
titles the model was trained on and the index was built from.
"""

from __future__ import annotations

from .errors import UserError

MAX_CHARS = 1000  # a title or question; tc3-prep keeps titles of up to 400 characters (--max-title-chars)


def accept(text: str, where: str = "") -> str:
    """`text` cleaned as tc3-prep cleans a title: ``<b>Girls</b> Tutu &amp; more`` gives ``Girls Tutu & more``; the
    empty string when nothing but markup and white space was typed. UserError, before anything else reads it,
    when the text holds more than MAX_CHARS characters (`where` prefixes the message: a file's line)."""
    from ._rust_clean import clean_title

    if len(text) > MAX_CHARS:
        raise UserError(f"{where}the text is {len(text):,} characters long; a title or question may have at most "
                        f"{MAX_CHARS:,} (tc3-prep keeps titles of up to 400 by default)")
    return clean_title(text)
