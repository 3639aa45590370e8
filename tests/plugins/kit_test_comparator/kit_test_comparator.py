"""A tiny kit comparator plugin for kit's tests.

``{even: true}`` passes when the value is an even integer, ``{even: false}`` when it
is an odd one. Registered through the ``kit.comparators`` entry point group (see
pyproject.toml).
"""

from kit.comparators import Comparator, Outcome


class EvenComparator(Comparator):
    name = "even"
    options = frozenset({"note"})

    def check_spec(self, spec, ctx):
        if not isinstance(spec["even"], bool):
            raise ValueError(f"even: expected true or false, got {spec['even']!r}")

    def compare(self, spec, actual, ctx):
        want_even = spec["even"]
        if isinstance(actual, bool) or not isinstance(actual, int):
            return Outcome("fail", f"expected an integer, got {actual!r}", want_even, repr(actual))
        if (actual % 2 == 0) == want_even:
            return Outcome("pass", "", want_even, actual)
        return Outcome("fail", f"{actual} is {'odd' if want_even else 'even'}", want_even, actual)
