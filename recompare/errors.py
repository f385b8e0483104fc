"""The one exception type the library raises for bad input.

The CLI turns a :class:`RecompareError` into a single line on stderr and a
non-zero exit; library users catch it like any ``ValueError``.
"""


class RecompareError(ValueError):
    """Bad input or an impossible request, with a message fit to show a user."""
