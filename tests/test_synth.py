"""The synthetic population: determinism, demography, morbidity, consistency with the truth, noise and file layout."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from presa.synth import SynthConfig, SynthReport, generate
from presa.synth.reference import (
    DATA_DIR,
    MALFORMED_VALUES,
    load_reference,
    official_icd9_codes,
    official_outpatient_codes,
)
from presa.synth.writer import ROW_GROUP_ROWS

FLOWS_YAML = Path(__file__).parent.parent / "presa" / "flows" / "data" / "flows.yaml"
TABLES = ("residents", "prescriptions", "outpatient", "discharges", "er_visits", "exemptions")
ATC_PATTERN = re.compile(r"^[A-Z][0-9]{2}[A-Z]{2}[0-9]{2}$")
# Codes a pathology legitimately shares with another under the shared reconstruction (SOURCES.md).
KNOWN_SHARED = {"A10AE04", "A10AE06", "A10AB05", "A10AB04", "L04AD02", "L04AD01", "L04AA06", "N06DA02", "N06DA03"}
KNOWN_SHARED |= {"N06DA04", "N06DX01", "5856"}


def flows_columns() -> dict[str, list[str]]:
    spec = yaml.safe_load(FLOWS_YAML.read_text(encoding="utf-8"))
    return {name: [c["name"] for c in table["columns"]] for name, table in spec["tables"].items()}


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthReport, duckdb.DuckDBPyConnection]:
    out = tmp_path_factory.mktemp("pop50k")
    report = generate(SynthConfig(residents=50_000, seed=11), out)
    con = duckdb.connect()
    for name in (*TABLES, "truth"):
        con.execute(f"create view {name} as select * from read_parquet('{out / name}.parquet')")
    # Clean residents: unique id, plausible birth date, well-formed municipality (malformed rows excluded).
    con.execute(
        "create view people as select * from residents where resident_id in "
        "(select resident_id from residents group by 1 having count(*) = 1) and birth_date >= date '1900-01-01' "
        "and regexp_full_match(municipality, '[0-9]{6}')"
    )
    return report, con


def scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    assert row is not None
    return row[0]


def data_files(directory: Path) -> Iterator[Path]:
    yield from sorted(p for p in directory.iterdir() if p.suffix in (".parquet", ".csv", ".json"))


# --- determinism ---------------------------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    first = generate(SynthConfig(residents=3_000, seed=5), tmp_path / "a").out_dir
    again = generate(SynthConfig(residents=3_000, seed=5), tmp_path / "b").out_dir
    other = generate(SynthConfig(residents=3_000, seed=6), tmp_path / "c").out_dir
    names = [p.name for p in data_files(first)]
    assert names == [p.name for p in data_files(again)]
    assert {"truth.parquet", "synth.json", *(f"{t}.parquet" for t in TABLES)} <= set(names)
    for name in names:
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    differing = [n for n in names if n.endswith(".parquet") and (first / n).read_bytes() != (other / n).read_bytes()]
    assert len(differing) == len(TABLES) + 1


# --- demography ----------------------------------------------------------------------------------------------------


def test_age_and_sex_structure_follows_lombardy(population: tuple[SynthReport, duckdb.DuckDBPyConnection]) -> None:
    _, con = population
    with (DATA_DIR / "population_lombardy_2024.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    total = sum(int(r["males"]) + int(r["females"]) for r in rows)

    def expected(lo: int, hi: int) -> float:
        inside = [r for r in rows if lo <= int(r["age_min"]) <= hi]
        return sum(int(r["males"]) + int(r["females"]) for r in inside) / total

    age = "date_diff('year', birth_date, date '2025-12-31')"
    n = scalar(con, "select count(*) from people")
    for lo, hi in ((0, 14), (15, 44), (45, 64), (65, 84), (85, 120)):
        share = scalar(con, f"select count(*) from people where {age} between {lo} and {hi}") / n
        assert share == pytest.approx(expected(lo, hi), abs=0.01), (lo, hi)
    male = scalar(con, "select avg((sex = 'M')::int) from people")
    expected_male = sum(int(r["males"]) for r in rows) / total
    assert male == pytest.approx(expected_male, abs=0.01)


def test_ats_shares_and_municipality_codes(population: tuple[SynthReport, duckdb.DuckDBPyConnection]) -> None:
    _, con = population
    with (DATA_DIR / "municipalities.csv").open(encoding="utf-8") as f:
        municipalities = list(csv.DictReader(f))
    by_ats: dict[str, int] = {}
    for m in municipalities:
        by_ats[m["ats"]] = by_ats.get(m["ats"], 0) + int(m["residents_2021"])
    total = sum(by_ats.values())
    shares = dict(con.execute("select ats, count(*) / sum(count(*)) over () from people group by 1").fetchall())
    assert set(shares) == set(by_ats)
    for ats, residents in by_ats.items():
        assert shares[ats] == pytest.approx(residents / total, abs=0.01), ats
    codes = {m["istat_code"]: m["ats"] for m in municipalities}
    pairs = con.execute("select distinct municipality, ats from people").fetchall()
    assert all(codes.get(municipality) == ats for municipality, ats in pairs)


def test_gp_lists_hold_about_1400_patients_within_one_ats(
    population: tuple[SynthReport, duckdb.DuckDBPyConnection],
) -> None:
    _, con = population
    sizes = [n for (n,) in con.execute("select count(*) from people group by gp_id").fetchall()]
    # In a 50 k population a small ATS may have room for lists just outside the range; on 1 M, 90% are inside.
    in_range = sum(1300 <= n <= 1500 for n in sizes) / len(sizes)
    assert in_range >= 0.8
    assert 1350 <= sum(sizes) / len(sizes) <= 1450
    assert scalar(con, "select max(c) from (select count(distinct ats) c from people group by gp_id)") == 1


def test_deaths_are_few_age_dependent_and_end_the_records(
    population: tuple[SynthReport, duckdb.DuckDBPyConnection],
) -> None:
    _, con = population
    age = "date_diff('year', birth_date, date '2025-12-31')"
    dead_share = scalar(con, "select avg((death_date is not null)::int) from people")
    assert 0.01 < dead_share < 0.03  # about 1% a year over two years
    old = scalar(con, f"select avg((death_date is not null)::int) from people where {age} >= 80")
    young = scalar(con, f"select avg((death_date is not null)::int) from people where {age} between 20 and 49")
    assert old > 20 * young
    after_death = scalar(
        con,
        "select count(*) from prescriptions p join people r using (resident_id) "
        "where r.death_date is not null and p.dispensing_date > r.death_date",
    )
    assert after_death == 0
    assert scalar(con, "select count(*) from people where registration_date < birth_date") == 0


# --- morbidity -----------------------------------------------------------------------------------------------------


def test_a_third_are_chronic_with_lombardy_like_levels(
    population: tuple[SynthReport, duckdb.DuckDBPyConnection],
) -> None:
    report, con = population
    manifest = json.loads((report.out_dir / "synth.json").read_text(encoding="utf-8"))
    levels = manifest["truth_levels"]
    total = sum(levels.values())
    assert total == 50_000
    assert 0.30 <= (levels["1"] + levels["2"] + levels["3"]) / total <= 0.37
    assert 0.010 <= levels["1"] / total <= 0.022  # Lombardy: 150 k per 10 M
    assert 0.09 <= levels["2"] / total <= 0.15  # 1.3 M
    assert 0.16 <= levels["3"] / total <= 0.24  # 1.9 M
    assert scalar(con, "select count(distinct pathology_id) from truth") >= 55


def test_multimorbidity_rises_with_age(population: tuple[SynthReport, duckdb.DuckDBPyConnection]) -> None:
    _, con = population
    mean = {}
    for label, lo, hi in (("young", 15, 44), ("middle", 45, 64), ("old", 75, 120)):
        mean[label] = scalar(
            con,
            "select avg(coalesce(k, 0)) from people left join "
            "(select resident_id, count(*) k from truth group by 1) using (resident_id) "
            f"where date_diff('year', birth_date, date '2025-12-31') between {lo} and {hi}",
        )
    assert mean["young"] < mean["middle"] < mean["old"]
    assert mean["old"] > 1.4


# --- records and truth ---------------------------------------------------------------------------------------------


def test_treated_type2_diabetics_have_metformin_class_drugs(
    population: tuple[SynthReport, duckdb.DuckDBPyConnection],
) -> None:
    _, con = population
    treated = con.execute(
        "select distinct resident_id from prescriptions join truth using (resident_id) "
        "where pathology_id = 'diabetes_type2' and atc like 'A10%'"
    ).fetchall()
    assert len(treated) > 500
    without_a10b = scalar(
        con,
        "select count(*) from (select resident_id from prescriptions join truth using (resident_id) "
        "where pathology_id = 'diabetes_type2' and atc like 'A10%' group by 1 "
        "having count(*) filter (where atc like 'A10B%') = 0)",
    )
    assert without_a10b == 0
    untreated = scalar(
        con,
        "select count(*) from truth t where pathology_id = 'diabetes_type2' and not exists "
        "(select 1 from prescriptions p where p.resident_id = t.resident_id and atc like 'A10%')",
    )
    assert untreated > 0  # some diabetics are on diet only


def test_repeated_chronic_drugs_belong_to_a_true_pathology(
    population: tuple[SynthReport, duckdb.DuckDBPyConnection],
) -> None:
    _, con = population
    prefixes = [(pid, x) for pid, pre in load_reference().pathologies.prefixes.items() for x in pre.get("atc", [])]
    con.execute("create or replace temp table atc_prefix (pathology_id varchar, prefix varchar)")
    con.executemany("insert into atc_prefix values (?, ?)", prefixes)
    repeated = con.execute(
        "select resident_id, atc from prescriptions where resident_id is not null "
        "and exists (select 1 from atc_prefix where starts_with(atc, prefix)) group by 1, 2 having count(*) >= 2"
    ).fetchall()
    assert len(repeated) > 10_000
    orphans = scalar(
        con,
        "select count(*) from (select resident_id, atc from prescriptions where resident_id is not null "
        "and exists (select 1 from atc_prefix where starts_with(atc, prefix)) group by 1, 2 having count(*) >= 2) d "
        "where not exists (select 1 from truth t join atc_prefix a using (pathology_id) "
        "where t.resident_id = d.resident_id and starts_with(d.atc, a.prefix))",
    )
    # Only malformed duplicate rows of a one-off prescription can make a non-chronic drug pair repeat.
    assert orphans <= 3
    one_offs = scalar(
        con,
        "select count(*) from (select resident_id from prescriptions where atc in ('C09AA05', 'R03AK06') "
        "and resident_id not in (select resident_id from truth) group by 1 having count(*) = 1)",
    )
    assert one_offs > 100


def test_every_true_pathology_leaves_a_trace(population: tuple[SynthReport, duckdb.DuckDBPyConnection]) -> None:
    _, con = population
    rows = []
    for pid, pre in load_reference().pathologies.prefixes.items():
        for kind in ("exemption", "atc", "icd9", "outpatient"):
            rows += [(pid, kind, x) for x in pre.get(kind, [])]
    con.execute("create or replace temp table prefix (pathology_id varchar, kind varchar, prefix varchar)")
    con.executemany("insert into prefix values (?, ?, ?)", rows)
    dx = " or ".join(f"starts_with(d.{c}, p.prefix)" for c in ("dx_main", "dx_2", "dx_3", "dx_4", "dx_5", "dx_6"))
    traced = scalar(
        con,
        f"""
        select avg((exists (select 1 from exemptions e join prefix p on p.kind = 'exemption'
                             and starts_with(e.exemption_code, p.prefix)
                            where e.resident_id = t.resident_id and p.pathology_id = t.pathology_id)
                 or exists (select 1 from prescriptions r join prefix p
                             on p.kind = 'atc' and starts_with(r.atc, p.prefix)
                            where r.resident_id = t.resident_id and p.pathology_id = t.pathology_id)
                 or exists (select 1 from discharges d join prefix p on p.kind = 'icd9' and ({dx})
                            where d.resident_id = t.resident_id and p.pathology_id = t.pathology_id)
                 or exists (select 1 from outpatient o join prefix p on p.kind = 'outpatient'
                             and starts_with(o.service_code, p.prefix)
                            where o.resident_id = t.resident_id and p.pathology_id = t.pathology_id))::int)
        from truth t
        """,
    )
    assert traced >= 0.995


def test_chronic_diagnoses_and_exemptions_match_the_truth(
    population: tuple[SynthReport, duckdb.DuckDBPyConnection],
) -> None:
    _, con = population
    rows = [
        (pid, kind, x)
        for pid, pre in load_reference().pathologies.prefixes.items()
        for kind in ("icd9", "exemption")
        for x in pre.get(kind, [])
    ]
    con.execute("create or replace temp table prefix2 (pathology_id varchar, kind varchar, prefix varchar)")
    con.executemany("insert into prefix2 values (?, ?, ?)", rows)
    unexplained_dx = scalar(
        con,
        """
        select count(*) from (select resident_id, unnest([dx_main, dx_2, dx_3, dx_4, dx_5, dx_6]) code
                              from discharges where resident_id in (select resident_id from people)) d
        where code is not null
          and exists (select 1 from prefix2 p where p.kind = 'icd9' and starts_with(d.code, p.prefix))
          and not exists (select 1 from truth t join prefix2 p using (pathology_id)
                          where p.kind = 'icd9' and t.resident_id = d.resident_id and starts_with(d.code, p.prefix))
        """,
    )
    assert unexplained_dx == 0
    unexplained_exemptions = scalar(
        con,
        """
        select count(*) from exemptions e where resident_id in (select resident_id from people)
          and regexp_full_match(exemption_code, '^([0-9A-C][0-9A-Z][0-9]{1,2}|R[A-Z0-9]{3,5})(\\.[0-9A-Z.]{1,6})?$')
          and not exists (select 1 from truth t join prefix2 p using (pathology_id)
                          where p.kind = 'exemption' and t.resident_id = e.resident_id
                            and starts_with(e.exemption_code, p.prefix))
        """,
    )
    assert unexplained_exemptions == 0


def test_generated_codes_are_real_codes(population: tuple[SynthReport, duckdb.DuckDBPyConnection]) -> None:
    _, con = population
    icd9 = set(official_icd9_codes())
    services = official_outpatient_codes()
    used_dx = {c for (c,) in con.execute("select distinct dx_main from discharges").fetchall()}
    assert len(used_dx - icd9) <= 4  # the malformed variants only
    used_services = {c for (c,) in con.execute("select distinct service_code from outpatient").fetchall()}
    assert len(used_services - services) <= 5
    atcs = [c for (c,) in con.execute("select distinct atc from prescriptions").fetchall()]
    assert sum(not ATC_PATTERN.match(a) for a in atcs) <= 5
    assert all(ATC_PATTERN.match(a) for a in atcs if a.isascii() and len(a) == 7 and a[:3] != "C9A")


def test_profiles_use_codes_within_their_own_pathology() -> None:
    ref = load_reference()
    table = ref.pathologies
    icd9 = set(official_icd9_codes())
    services = official_outpatient_codes()
    atc_prefixes = [(pid, x) for pid, pre in table.prefixes.items() for x in pre.get("atc", [])]
    icd_prefixes = [(pid, x) for pid, pre in table.prefixes.items() for x in pre.get("icd9", [])]
    for i, pid in enumerate(table.ids):
        for item in range(table.drugs.ptr[i], table.drugs.ptr[i + 1]):
            atc = ref.vocab.atc.values[table.drug_atc[item]]
            owners = {p for p, x in atc_prefixes if atc.startswith(x)}
            assert pid in owners, (pid, atc)
            assert owners == {pid} or atc in KNOWN_SHARED, (pid, atc, owners)
        for item in range(table.main_dx.ptr[i], table.main_dx.ptr[i + 1]):
            code = ref.vocab.icd9.values[table.main_dx_code[item]]
            owners = {p for p, x in icd_prefixes if code.startswith(x)}
            assert code in icd9 and pid in owners, (pid, code)
            assert owners == {pid} or code in KNOWN_SHARED, (pid, code, owners)
        for item in range(table.visits.ptr[i], table.visits.ptr[i + 1]):
            assert ref.vocab.service.values[table.visit_code[item]] in services
    # Malformed values never look like a chronic code, whatever a loader does with them.
    kinds = {"atc": "atc", "icd9": "icd9", "exemption": "exemption", "service": "outpatient"}
    for vocabulary, kind in kinds.items():
        chronic = [x for pre in table.prefixes.values() for x in pre.get(kind, [])]
        assert not [v for v in MALFORMED_VALUES[vocabulary] if any(v.startswith(x) for x in chronic)], vocabulary
    # Coding slips keep a diagnosis within the same pathologies.
    for code, neighbour in zip(ref.vocab.icd9.values, ref.icd9_neighbour, strict=False):
        other = ref.vocab.icd9.values[neighbour]
        assert {p for p, x in icd_prefixes if code.startswith(x)} == {p for p, x in icd_prefixes if other.startswith(x)}


def test_profiles_agree_with_the_product_catalog_where_it_has_rules() -> None:
    stratify = pytest.importorskip("presa.stratify.catalog")
    try:
        catalog = stratify.load_catalog()
    except Exception as exc:  # the catalog is written in parallel; a half-written one is not this module's fault
        pytest.skip(f"catalog not loadable: {exc}")
    ref = load_reference()
    table = ref.pathologies
    rules: dict[tuple[str, str], list[str]] = {}
    for leaf in catalog.leaves():
        codes = getattr(leaf.rule, "atc", None) or getattr(leaf.rule, "icd9", None) or leaf.rule.codes
        rules.setdefault((leaf.pathology_id, leaf.source), []).extend(codes)
    checked = 0
    for i, pid in enumerate(table.ids):
        drugs = rules.get((pid, "prescriptions"))
        for item in range(table.drugs.ptr[i], table.drugs.ptr[i + 1]) if drugs else ():
            atc = ref.vocab.atc.values[table.drug_atc[item]]
            assert any(atc.startswith(x) for x in drugs or []), (pid, atc)
            checked += 1
        diagnoses = rules.get((pid, "discharges"))
        for item in range(table.main_dx.ptr[i], table.main_dx.ptr[i + 1]) if diagnoses else ():
            code = ref.vocab.icd9.values[table.main_dx_code[item]]
            assert any(code.startswith(x) for x in diagnoses or []), (pid, code)
            checked += 1
    assert checked > 0


# --- noise ---------------------------------------------------------------------------------------------------------


def test_malformed_share_follows_the_configured_rate(tmp_path: Path) -> None:
    report = generate(SynthConfig(residents=8_000, seed=2, malformed_rate=0.02), tmp_path)
    manifest = json.loads((report.out_dir / "synth.json").read_text(encoding="utf-8"))
    for name in ("prescriptions", "outpatient", "residents"):
        share = manifest["malformed_rows"][name] / manifest["rows"][name]
        assert share == pytest.approx(0.02, rel=0.25), name
    con = duckdb.connect()
    path = tmp_path / "prescriptions.parquet"
    residents = tmp_path / "residents.parquet"
    broken = scalar(
        con,
        f"""
        select count(*) from read_parquet('{path}') p
        where resident_id is null
           or dispensing_date < date '1900-01-01'
           or not regexp_full_match(atc, '[A-Z][0-9]{{2}}[A-Z]{{2}}[0-9]{{2}}')
           or not regexp_full_match(aic, '[0-9]{{9}}')
           or packs not between 1 and 99
           or not exists (select 1 from read_parquet('{residents}') r where r.resident_id = p.resident_id)
        """,
    )
    duplicates = scalar(
        con,
        f"select coalesce(sum(n - 1), 0) from (select count(*) n from read_parquet('{path}') "
        "group by resident_id, dispensing_date, atc, aic, packs, ddd having n > 1)",
    )
    rows = manifest["rows"]["prescriptions"]
    assert (broken + duplicates) / rows == pytest.approx(0.02, rel=0.25)
    assert broken > 0 and duplicates > 0


def test_no_malformed_rows_when_the_rate_is_zero(tmp_path: Path) -> None:
    report = generate(SynthConfig(residents=2_000, seed=4, malformed_rate=0.0), tmp_path)
    manifest = json.loads((report.out_dir / "synth.json").read_text(encoding="utf-8"))
    assert sum(manifest["malformed_rows"].values()) == 0
    assert manifest["rows"]["residents"] == 2_000


# --- files ---------------------------------------------------------------------------------------------------------


def test_parquet_files_have_the_flows_columns_in_order_and_typed_dates(
    population: tuple[SynthReport, duckdb.DuckDBPyConnection],
) -> None:
    report, _ = population
    expected = flows_columns()
    for name in TABLES:
        parquet = pq.ParquetFile(report.out_dir / f"{name}.parquet")
        schema = parquet.schema_arrow
        assert schema.names == expected[name], name
        for field in schema:
            if field.name.endswith("_date"):
                assert str(field.type) == "date32[day]", (name, field.name)
        assert all(parquet.metadata.row_group(i).num_rows <= ROW_GROUP_ROWS for i in range(parquet.num_row_groups))
        assert parquet.metadata.row_group(0).column(0).compression == "SNAPPY"
    assert report.rows == {
        name: pq.ParquetFile(report.out_dir / f"{name}.parquet").metadata.num_rows for name in TABLES
    }


def test_records_are_sorted_by_resident_and_about_22_a_year(
    population: tuple[SynthReport, duckdb.DuckDBPyConnection],
) -> None:
    report, con = population
    ids = [r for (r,) in con.execute("select resident_id from outpatient where resident_id like 'LO1%'").fetchall()]
    assert ids == sorted(ids)
    records = sum(n for name, n in report.rows.items() if name != "residents")
    per_resident_year = records / 50_000 / 2
    assert 18 <= per_resident_year <= 26


def test_csv_export_in_latin1_with_semicolons_and_italian_dates(tmp_path: Path) -> None:
    report = generate(
        SynthConfig(residents=4_000, seed=9, format="csv", encoding="latin-1", malformed_rate=0.02), tmp_path
    )
    expected = flows_columns()
    for name in TABLES:
        raw = (tmp_path / f"{name}.csv").read_bytes()
        text = raw.decode("latin-1")
        lines = text.splitlines()
        header = [h.strip('"') for h in lines[0].split(";")]
        assert header == expected[name], name
        assert len(lines) - 1 >= report.rows[name]  # quoted fields never span lines here
    residents = (tmp_path / "residents.csv").read_text(encoding="latin-1").splitlines()
    birth = residents[1].split(";")[1].strip('"')
    assert re.fullmatch(r"\d{2}/\d{2}/\d{4}", birth)
    everything = "".join((tmp_path / f"{name}.csv").read_text(encoding="latin-1") for name in TABLES)
    assert any(bad in everything for bad in ("31/02/2024", "30/02/2025", "31/04/2024", "00/01/2024", "15/13/2024"))
    assert any(ord(ch) > 127 for ch in everything)  # malformed values with accents survive the encoding
    with pytest.raises(UnicodeDecodeError):  # Latin-1 bytes for the accented letters, not UTF-8
        "".join((tmp_path / f"{name}.csv").read_bytes().decode("utf-8") for name in TABLES)
    ddd = [
        line.split(";")[5] for line in (tmp_path / "prescriptions.csv").read_text(encoding="latin-1").splitlines()[1:]
    ]
    assert all(re.fullmatch(r"-?\d+(,\d+)?", value) for value in ddd)
    assert any("," in value for value in ddd)
    assert (tmp_path / "truth.parquet").exists()


def test_progress_is_reported_and_config_is_validated(tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    generate(SynthConfig(residents=1_000, seed=1), tmp_path, on_progress=lambda s, d, t: seen.append((s, d, t)))
    assert seen[0] == ("residents", 1_000, 1_000)
    assert seen[-1][0] == "written"
    with pytest.raises(ValueError):
        SynthConfig(residents=0)
    with pytest.raises(ValueError):
        SynthConfig(residents=10, malformed_rate=0.5)
