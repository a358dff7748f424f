"""Attribution methods, all with one interface (:class:`Attributor`) and one result type."""

from pi_lightning.attributors.base import Attributor, available_methods, get_attributor, register
from pi_lightning.attributors.sppi import SPPI

__all__ = ["Attributor", "SPPI", "available_methods", "get_attributor", "register"]
