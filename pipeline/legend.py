"""Product codes -> dense class indices and the flags indicators use (DESIGN.md §3).

Indicators never see raw product codes. They see class indices:

- ``0`` (OUTSIDE): outside the landscape boundary; excluded from every number;
- ``1`` (UNMAPPED): inside the boundary but not observed (legend nodata codes, the file's nodata value,
  or beyond the raster's extent); reported as ``unmapped_ha``;
- ``2 ..``: the legend's classes in ascending code order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import ECOSYSTEMS, GROUPS, LegendConfig, load_legend
from pipeline.errors import LegendError

OUTSIDE = 0
UNMAPPED = 1
FIRST_CLASS = 2


@dataclass(frozen=True, eq=False)
class Legend:
    """Lookup tables for one legend. Arrays are indexed by class index (see module docstring)."""

    name: str
    path: Path
    config: LegendConfig
    codes: np.ndarray = field(repr=False)  # product code per class index (-1 for OUTSIDE / UNMAPPED)
    names: tuple[str, ...] = field(repr=False)
    natural: np.ndarray = field(repr=False)  # bool
    ecosystem: np.ndarray = field(repr=False)  # int8 index into ECOSYSTEMS, -1 when not natural
    mining: np.ndarray = field(repr=False)  # bool
    water: np.ndarray = field(repr=False)  # bool
    group: np.ndarray = field(repr=False)  # int8 index into config.GROUPS, -1 when not given
    condition: np.ndarray = field(repr=False)  # int16 condition rank, -1 when not given

    @classmethod
    def from_config(cls, name: str, path: Path, config: LegendConfig) -> Legend:
        codes = sorted(config.classes)
        classes = [config.classes[c] for c in codes]
        return cls(
            name=name,
            path=path,
            config=config,
            codes=np.array([-1, -1, *codes], dtype=np.int64),
            names=("outside", "unmapped", *(c.name for c in classes)),
            natural=np.array([False, False, *(c.natural for c in classes)]),
            ecosystem=np.array(
                [-1, -1, *(ECOSYSTEMS.index(c.ecosystem) if c.ecosystem else -1 for c in classes)], dtype=np.int8
            ),
            mining=np.array([False, False, *(c.mining for c in classes)]),
            water=np.array([False, False, *(c.water for c in classes)]),
            group=np.array([-1, -1, *(GROUPS.index(c.group) if c.group else -1 for c in classes)], dtype=np.int8),
            condition=np.array([-1, -1, *(c.condition if c.condition is not None else -1 for c in classes)],
                               dtype=np.int16),
        )

    @property
    def n_classes(self) -> int:
        """Number of class indices, OUTSIDE and UNMAPPED included."""
        return len(self.names)

    @property
    def unmapped_code(self) -> int:
        """Code written into aligned rasters for unobserved pixels inside the boundary."""
        return self.config.nodata[0]

    def outside_code(self, dtype: np.dtype) -> int:
        """Code for pixels outside the boundary: 0 or the dtype's maximum, whichever the legend leaves free."""
        used = set(self.config.classes) | set(self.config.nodata)
        for candidate in (0, int(np.iinfo(dtype).max)):
            if candidate not in used:
                return candidate
        raise LegendError(f"{self.path}: codes 0 and {np.iinfo(dtype).max} are both used; no code is left for 'outside'")

    def lookup_table(self, dtype: np.dtype, *, outside_code: int) -> np.ndarray:
        """Table ``lut[code] -> class index`` for every value of an unsigned integer dtype.

        Codes the legend does not know map to UNMAPPED here; `unknown_codes` finds them first.
        """
        size = int(np.iinfo(dtype).max) + 1
        lut = np.full(size, UNMAPPED, dtype=np.uint16 if self.n_classes > 255 else np.uint8)
        for index, code in enumerate(self.codes[FIRST_CLASS:], start=FIRST_CLASS):
            if code < size:
                lut[code] = index
        lut[outside_code] = OUTSIDE
        return lut

    def unknown_codes(self, histogram: np.ndarray, *, outside_code: int, extra_nodata: tuple[int, ...] = ()) -> list[int]:
        """Codes with a non-zero count in ``histogram`` (indexed by code) that the legend does not describe."""
        known = set(self.config.classes) | set(self.config.nodata) | set(extra_nodata) | {outside_code}
        return [int(c) for c in np.flatnonzero(histogram) if int(c) not in known]

    def check_codes(self, histogram: np.ndarray, *, source: str, outside_code: int, extra_nodata: tuple[int, ...] = ()) -> None:
        """Raise LegendError naming the codes, the file and the legend when a code is undocumented."""
        unknown = self.unknown_codes(histogram, outside_code=outside_code, extra_nodata=extra_nodata)
        if unknown:
            counts = ", ".join(f"{c} ({int(histogram[c]):,} px)" for c in unknown)
            raise LegendError(
                f"code(s) {counts} occur in {source} inside the boundary but not in {self.path}; "
                "add them to classes or to nodata in the legend"
            )

    def natural_indices(self) -> np.ndarray:
        return np.flatnonzero(self.natural)


def load(name: str, legends_dir: Path) -> Legend:
    """Load configs/legends/<name>.yaml."""
    path = legends_dir / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in legends_dir.glob("*.yaml"))
        raise LegendError(f"landcover.legend: {path} not found; known legends: {', '.join(known) or 'none'}")
    return Legend.from_config(name, path, load_legend(path))
