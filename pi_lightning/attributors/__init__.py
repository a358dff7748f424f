"""Attribution methods, all with one interface (:class:`Attributor`) and one result type."""

from pi_lightning.attributors.alast import ALast
from pi_lightning.attributors.at2 import AT2
from pi_lightning.attributors.base import (
    Attributor,
    attributor_from_settings,
    available_methods,
    get_attributor,
    register,
)
from pi_lightning.attributors.gae import GAE
from pi_lightning.attributors.gradients import InputXGradientAttributor, IntegratedGradientsAttributor
from pi_lightning.attributors.kernelshap import KernelShapAttributor
from pi_lightning.attributors.lrp import LRP
from pi_lightning.attributors.mppi import MPPI
from pi_lightning.attributors.random import RandomAttributor
from pi_lightning.attributors.shap_explainers import ShapPartitionAttributor, ShapPermutationAttributor
from pi_lightning.attributors.sppi import SPPI
from pi_lightning.attributors.udig import UDIG

__all__ = [
    "AT2",
    "GAE",
    "LRP",
    "MPPI",
    "SPPI",
    "UDIG",
    "ALast",
    "Attributor",
    "InputXGradientAttributor",
    "IntegratedGradientsAttributor",
    "KernelShapAttributor",
    "RandomAttributor",
    "ShapPartitionAttributor",
    "ShapPermutationAttributor",
    "attributor_from_settings",
    "available_methods",
    "get_attributor",
    "register",
]
