"""Duration bins for Lhotse's dynamic bucketing, estimated from prepared cuts.

The file is a flat YAML list of bin edges in seconds: the value of NeMo's ``bucket_duration_bins``
(``num_buckets`` is then ``len(bins) + 1``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import yaml
from lhotse.cut import Cut
from lhotse.dataset.sampling.dynamic_bucketing import estimate_duration_buckets


def estimate_bins(cuts: Iterable[Cut], num_cuts: int, num_buckets: int) -> list[float]:
    """Edges that split the total duration of ``cuts`` (``num_cuts`` of them, read lazily) into
    ``num_buckets`` about equal parts; fewer buckets when there are fewer cuts, none below two cuts."""
    num_buckets = min(num_buckets, num_cuts)
    if num_buckets < 2:
        return []
    edges = estimate_duration_buckets(cuts, num_buckets=num_buckets)
    # Many equal durations give repeated edges; the sampler wants them strictly increasing.
    return sorted({round(float(e), 3) for e in edges})


def write_bins(path: Path, bins: list[float], source: str) -> None:
    header = (
        f"# bucket_duration_bins estimated from {source}\n"
        f"# {len(bins) + 1} buckets (Lhotse's dynamic bucketing takes their number from these edges)\n"
    )
    path.write_text(header + yaml.safe_dump([float(b) for b in bins], default_flow_style=False), encoding="utf-8")
