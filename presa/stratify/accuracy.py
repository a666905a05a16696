"""How well a run recovers known pathologies: sensitivity, specificity and PPV per pathology against a truth file.

The truth is a Parquet file of (resident_id, pathology_id) pairs, such as the one ``presa synth`` writes. Only
residents of the run's population count; a pathology with no true case has no sensitivity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from presa.stratify.runview import open_run


@dataclass(frozen=True)
class PathologyAccuracy:
    pathology_id: str
    true_positives: int
    false_negatives: int
    false_positives: int
    true_negatives: int

    @property
    def sensitivity(self) -> float | None:
        cases = self.true_positives + self.false_negatives
        return self.true_positives / cases if cases else None

    @property
    def specificity(self) -> float | None:
        non_cases = self.true_negatives + self.false_positives
        return self.true_negatives / non_cases if non_cases else None

    @property
    def ppv(self) -> float | None:
        detected = self.true_positives + self.false_positives
        return self.true_positives / detected if detected else None


ACCURACY_SQL = """
WITH detected AS (
  SELECT r.resident_id, UNNEST(r.pathologies) AS pathology_id FROM residents AS r WHERE r.n_pathologies > 0
),
truth AS (
  SELECT DISTINCT t.resident_id, t.pathology_id
  FROM read_parquet(?) AS t
  JOIN residents AS r ON r.resident_id = t.resident_id
),
pairs AS (
  SELECT COALESCE(d.pathology_id, t.pathology_id) AS pathology_id,
         d.resident_id IS NOT NULL AS found, t.resident_id IS NOT NULL AS true_case
  FROM detected AS d
  FULL OUTER JOIN truth AS t ON t.resident_id = d.resident_id AND t.pathology_id = d.pathology_id
)
SELECT p.pathology_id,
       COUNT(*) FILTER (WHERE found AND true_case) AS tp,
       COUNT(*) FILTER (WHERE true_case AND NOT found) AS fn,
       COUNT(*) FILTER (WHERE found AND NOT true_case) AS fp
FROM pairs AS p
GROUP BY p.pathology_id
ORDER BY p.pathology_id
"""


def measure_accuracy(run_dir: Path, truth: Path) -> tuple[PathologyAccuracy, ...]:
    """Per pathology of the run's catalog, the confusion counts against ``truth`` over the run's population."""
    if not truth.is_file():
        raise FileNotFoundError(f"truth file {truth} does not exist")
    con = open_run(run_dir)
    try:
        population = int(con.execute("SELECT COUNT(*) FROM residents").fetchone()[0])  # type: ignore[index]
        counts = {row[0]: row[1:] for row in con.execute(ACCURACY_SQL, [str(truth)]).fetchall()}
        catalog_ids = [
            row[0] for row in con.execute("SELECT pathology_id FROM pathologies ORDER BY priority").fetchall()
        ]
    finally:
        con.close()
    results = []
    for pid in catalog_ids:
        tp, fn, fp = counts.get(pid, (0, 0, 0))
        results.append(PathologyAccuracy(pid, tp, fn, fp, population - tp - fn - fp))
    return tuple(results)


def overall(results: tuple[PathologyAccuracy, ...]) -> PathologyAccuracy:
    """Micro-averaged counts over every (resident, pathology) pair."""
    return PathologyAccuracy(
        "all",
        sum(r.true_positives for r in results),
        sum(r.false_negatives for r in results),
        sum(r.false_positives for r in results),
        sum(r.true_negatives for r in results),
    )
