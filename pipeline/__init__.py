"""Ecosystem indicators for LandScale assessments from land-cover rasters.

Importing the package has no side effects: no Earth Engine initialisation, no environment loading.
"""

__version__ = "0.1.0"
