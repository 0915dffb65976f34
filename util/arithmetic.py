"""Integer arithmetic written once."""


def round_up(value, multiple):
    """The smallest multiple of `multiple` (a positive integer) that is at least `value`."""
    return -(-int(value) // int(multiple)) * int(multiple)
