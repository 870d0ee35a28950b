"""Errors a user can cause. Each message names the file or key, the bad value and the fix.

The CLI prints these as one line and exits with code 1 (no traceback unless --debug).
"""


class PipelineError(Exception):
    """Base class for every error caused by inputs or configuration."""


class ConfigError(PipelineError, ValueError):
    """A landscape or legend YAML file is invalid."""


class LegendError(PipelineError, ValueError):
    """A land-cover code is not described by the legend."""


class GridError(PipelineError, ValueError):
    """The landscape grid cannot give true areas or does not fit the inputs."""


class SourceError(PipelineError, OSError):
    """An input file is missing, unreadable, or lacks what the pipeline needs (CRS, bands, overlap)."""


class AreaCheckError(PipelineError):
    """The area inside the boundary on the grid disagrees with the boundary's geodesic area."""
