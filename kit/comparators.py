"""The comparator plugin API, where plugin authors import it from (``from kit.comparators import
Comparator, Outcome``): a face of `kit.verification.comparators`, whose docstring is the guide."""

from kit.verification.comparators import Comparator, CompareContext, Outcome, register

__all__ = ["CompareContext", "Comparator", "Outcome", "register"]
