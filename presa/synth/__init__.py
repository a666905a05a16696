"""Synthetic regional population: residents of Lombardy, their chronic pathologies and the raw flows they leave.

    from presa.synth import SynthConfig, generate
    report = generate(SynthConfig(residents=50_000, seed=7), Path("out"))

Writes residents, prescriptions, outpatient, discharges, er_visits and exemptions as presa/flows/data/flows.yaml
describes them, plus truth.parquet (resident_id, pathology_id) and synth.json (config, row counts).
"""

from presa.synth.config import SynthConfig, SynthReport
from presa.synth.generate import generate

__all__ = ["SynthConfig", "SynthReport", "generate"]
