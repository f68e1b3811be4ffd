"""Counts of what validation found in the source rows: nothing is dropped silently."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class QualityReport:
    """What happened to the source rows of one ingest. Dropped rows are counted by
    reason; repaired fields (set to null) are counted too."""

    rows_in: int = 0
    rows_out: int = 0
    dropped_no_date: int = 0
    dropped_bad_direction: int = 0
    dropped_bad_throughput: int = 0
    dropped_outside_region: int = 0
    # A row whose test id was already seen that date and direction (counted at write).
    dropped_duplicate_id: int = 0
    # A row archived (M-Lab's `date`) neither on its test's date nor the next day: a
    # date's tests are those archived on it and the next day, whatever the blocks a run
    # reads (counted where a block reads the archive day holding it).
    dropped_archived_late: int = 0
    nulled_bad_rtt: int = 0
    nulled_bad_loss: int = 0
    nulled_bad_coordinates: int = 0
    unlocated: int = 0
    isp_from_maxmind: int = 0
    isp_from_mlab: int = 0
    isp_unknown: int = 0
    # Kept rows named without the MaxMind database because it was past the GeoLite
    # licence's limit (their ISPs came from M-Lab, as counted above).
    isp_geoip_refused: int = 0
    # How kept located rows' location precision was known (piecewise.core.location): the
    # radius M-Lab reported, one taken for a centroid, one taken for any other point.
    radius_reported: int = 0
    radius_from_pile: int = 0
    radius_assumed: int = 0
    radius_cityless: int = 0
    outside_layer: dict[str, int] = field(default_factory=dict)
    # Per layer: kept located rows too roughly located for its areas.
    too_coarse: dict[str, int] = field(default_factory=dict)

    def add(self, other: QualityReport) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, dict):
                for k, v in theirs.items():
                    mine[k] = mine.get(k, 0) + v
            else:
                setattr(self, f.name, mine + theirs)

    @property
    def dropped(self) -> int:
        return (
            self.dropped_no_date
            + self.dropped_bad_direction
            + self.dropped_bad_throughput
            + self.dropped_outside_region
            + self.dropped_duplicate_id
            + self.dropped_archived_late
        )

    def precision_warnings(self, min_share: float) -> list[str]:
        """A line per layer in which fewer than `min_share` of the located tests count
        (piecewise.core.location)."""
        from piecewise.core.location import precision_warnings

        located = {
            layer: self.rows_out - self.unlocated - self.outside_layer.get(layer, 0)
            for layer in self.too_coarse
        }
        return precision_warnings(self.too_coarse, located, min_share)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> QualityReport:
        return cls(
            **{
                **data,
                "outside_layer": dict(data.get("outside_layer") or {}),
                "too_coarse": dict(data.get("too_coarse") or {}),
            }
        )

    def summary(self) -> str:
        parts = [f"{self.rows_in} rows read", f"{self.rows_out} kept"]
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith(("dropped_", "nulled_")) and value:
                parts.append(f"{value} {f.name.replace('_', ' ')}")
        if self.isp_geoip_refused:  # a licence matter: said in every run's summary
            parts.append(
                f"{self.isp_geoip_refused} rows' ISPs from M-Lab's client.Network: the "
                "GeoIP database is past its licence's limit, not used"
            )
        return ", ".join(parts)
