"""Attribution methods, all with one interface (:class:`Attributor`) and one result type."""

from pi_lightning.attributors.base import Attributor, available_methods, get_attributor, register
from pi_lightning.attributors.sppi import SPPI
from pi_lightning.attributors.udig import UDIG

__all__ = ["Attributor", "SPPI", "UDIG", "available_methods", "get_attributor", "register"]
