"""The plant models, by name: an explicit dict, so what exists is read here, not discovered.

Each model is a ``Plant``: seeded, stepped at a fixed ``dt``, with its tags
described once in ``TAGS``. The protocol servers and the recorder take a model
from here by name.
"""

from sim_plant.plants.base import Plant
from sim_plant.plants.chemical import ChemicalPlant
from sim_plant.plants.oil import OilPlant
from sim_plant.plants.radiological import RadiologicalPlant

PLANTS: dict[str, type[Plant]] = {
    "oil": OilPlant,
    "chemical": ChemicalPlant,
    "radiological": RadiologicalPlant,
}

__all__ = ["PLANTS", "ChemicalPlant", "OilPlant", "Plant", "RadiologicalPlant"]
