"""presa's commands. Each parses its options, runs one domain function with a progress bar and prints the result."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from presa.cli.console import console, fail_cleanly, progress_bar, progress_steps
from presa.stratify.catalog import DEFAULT_CATALOG_DIR, load_catalog

# The engines (DuckDB, PyArrow, SQLAlchemy) are imported by the commands that use them, not here: `presa --help`
# and every command start in a fraction of a second instead of two.
if TYPE_CHECKING:
    from presa.flows.load import LoadReport
    from presa.stratify.spark import SparkOptions
    from presa.synth import SynthConfig

app = typer.Typer(
    name="presa",
    help="Presa in carico of chronic patients: synthetic flows, validation, stratification and its reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

CatalogOption = Annotated[
    Path, typer.Option("--catalog", help="Catalog directory (catalog.yaml + one YAML file per macro-area).")
]
ReferenceOption = Annotated[
    str | None,
    typer.Option("--reference-date", help="Reference date YYYY-MM-DD; default: the date of the flows' last record."),
]


def parse_date(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{option}: '{value}' is not a date in the form YYYY-MM-DD") from None


@app.command()
@fail_cleanly
def synth(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the flows, truth.parquet and synth.json.")],
    residents: Annotated[int, typer.Option("--residents", min=1, help="Number of residents.")] = 50_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same files.")] = 42,
    file_format: Annotated[
        str, typer.Option("--format", help="parquet or csv (';' separated, DD/MM/YYYY).")
    ] = "parquet",
    reference_date: Annotated[str, typer.Option("--reference-date", help="Last day of the period.")] = "2025-12-31",
    years: Annotated[int, typer.Option("--years", min=1, max=10, help="Years of records before that day.")] = 2,
    malformed_rate: Annotated[
        float, typer.Option("--malformed-rate", min=0.0, max=0.5, help="Share of malformed rows in every flow.")
    ] = 0.001,
    encoding: Annotated[
        str, typer.Option("--encoding", help="Text encoding of CSV files: utf-8 or latin-1.")
    ] = "utf-8",
) -> None:
    """Generate a synthetic Lombardy population: all six flows and the ground truth of its pathologies."""
    from presa.synth import generate

    config = synth_config(residents, seed, file_format, reference_date, years, malformed_rate, encoding)
    with progress_bar("Generating flows") as advance:
        report = generate(config, out, on_progress=advance)
    rows = ", ".join(f"{table} {count:,}" for table, count in report.rows.items())
    console.print(f"{residents:,} residents in {report.seconds:.1f} s into {out}: {rows}")


def synth_config(
    residents: int, seed: int, file_format: str, reference_date: str, years: int, malformed_rate: float, encoding: str
) -> SynthConfig:
    from presa.synth import SynthConfig

    if file_format not in ("parquet", "csv"):
        raise ValueError(f"--format: '{file_format}' is not one of parquet, csv")
    if encoding not in ("utf-8", "latin-1"):
        raise ValueError(f"--encoding: '{encoding}' is not one of utf-8, latin-1")
    return SynthConfig(
        residents=residents,
        seed=seed,
        reference_date=parse_date(reference_date, "--reference-date"),
        years=years,
        malformed_rate=malformed_rate,
        format=file_format,  # type: ignore[arg-type]
        encoding=encoding,  # type: ignore[arg-type]
    )


@app.command()
@fail_cleanly
def demo(
    out: Annotated[Path, typer.Option("--out", help="Working directory of the demo (replaced if it exists).")] = Path(
        "out/demo"
    ),
    residents: Annotated[int, typer.Option("--residents", min=100, help="Number of synthetic residents.")] = 50_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 42,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve the web application at the end (stop it with Ctrl-C).")
    ] = True,
    host: Annotated[str, typer.Option("--host", help="Address the web application listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port of the web application.")] = 8000,
) -> None:
    """The whole demo: synthesise a population, stratify it, report and check accuracy, load it into a care store,
    take part of it through the presa in carico (invited, enrolled, pacts signed, plans), and serve the web
    application with one demo account per role (passwords printed at start)."""
    from presa.stratify.pipeline import run_stratification
    from presa.synth import generate

    flows_dir, run_dir = out / "flows", out / "run"
    if out.exists():
        shutil.rmtree(out)
    config = synth_config(residents, seed, "parquet", "2025-12-31", 2, 0.001, "utf-8")
    with progress_steps() as steps:
        generate(config, flows_dir, on_progress=steps.phase("Generating flows"))
        result = run_stratification(
            flows_dir,
            run_dir,
            load_catalog(),
            config.reference_date,
            on_load_progress=steps.phase("Validating flows"),
            on_engine_progress=steps.phase("Stratifying"),
        )
    print_load_counts(result.load)
    console.print(f"Stratified {result.engine.population:,} residents in {result.seconds:.1f} s into {run_dir}")
    from presa.stratify.report import report_run  # matplotlib: loaded by the commands that draw

    report_run(run_dir, console)
    accuracy(run_dir, flows_dir / "truth.parquet")
    console.print(
        f"Query the run with DuckDB: {run_dir / 'stratification.duckdb'}; explain a resident with "
        f"'presa explain {run_dir} <resident_id>'."
    )
    demo_web(out, run_dir, seed=seed, serve=serve, host=host, port=port)


def demo_web(out: Path, run_dir: Path, *, seed: int, serve: bool, host: str, port: int) -> None:
    """The care store of the demo (``out/presa.sqlite3``, key ``out/presa.key``) and its web application."""
    import secrets

    from presa.care.store import make_engine, session_factory, upgrade
    from presa.cli.demo import seed_demo

    database = out / "presa.sqlite3"
    key = secrets.token_urlsafe(32).encode()
    (out / "presa.key").write_bytes(key)
    (out / "presa.key").chmod(0o600)
    url = f"sqlite:///{database.resolve()}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        with session_factory(engine)() as session, session.begin(), console.status("Care store") as status:
            report = seed_demo(session, run_dir, seed=seed, on_step=lambda text: status.update(text))
    finally:
        engine.dispose()
    console.print(
        f"Care store {database}: {report.patients:,} eligible patients in ATS {report.ats}, {report.invited:,} "
        f"invited, {report.enrolled:,} with a gestore, {report.pacts_signed:,} pacts signed, {report.plans:,} PAI "
        f"({report.plans_active:,} active).",
        soft_wrap=True,
    )
    accounts = Table(title="Demo accounts")
    for column in ("username", "password", "role", "who"):
        accounts.add_column(column)
    for account in report.accounts:
        accounts.add_row(account.username, account.password, account.role, account.description)
    console.print(accounts)
    lines = [f"{a.username}\t{a.password}\t{a.role}\t{a.description}" for a in report.accounts]
    (out / "accounts.tsv").write_text("username\tpassword\trole\twho\n" + "\n".join(lines) + "\n", encoding="utf-8")
    (out / "accounts.tsv").chmod(0o600)
    if not serve:
        console.print(f"Serve it with: PRESA_SECRET_KEY_FILE={out / 'presa.key'} presa serve --database {url}")
        return
    import uvicorn

    from presa.web.app import create_app

    console.print(f"presa on http://{host}:{port}/ (API under /api); stop with Ctrl-C.", soft_wrap=True)
    uvicorn.run(create_app(url, key=key), host=host, port=port, log_level="warning")


def print_load_counts(load: LoadReport | None) -> None:
    if load is None:
        return
    table = Table(title="Flows read, accepted and rejected")
    for column in ("table", "read", "accepted", "rejected"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for count in load.counts:
        table.add_row(count.table, f"{count.read:,}", f"{count.accepted:,}", f"{count.rejected:,}")
    console.print(table)


@app.command()
@fail_cleanly
def validate(
    flows: Annotated[Path, typer.Argument(help="Directory with the flows as shipped (Parquet or delimited text).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the validated store into (must not exist).")],
) -> None:
    """Validate the regional flows into a typed store; every rejected row is kept with its reason and location."""
    from presa.flows.load import load_flows

    if out.exists():
        raise FileExistsError(f"{out} already exists")
    with progress_bar("Validating flows") as advance:
        report = load_flows(flows, out, on_progress=advance)
    print_load_counts(report)
    console.print(f"Rejected rows, with file, line, column and reason: {out / 'rejects.parquet'}")


@app.command()
@fail_cleanly
def stratify(
    flows: Annotated[
        str,
        typer.Argument(
            help="Flows directory: raw as shipped, or a store written by 'presa validate'; with --engine spark also "
            "a validated store on any path Spark reads (hdfs://, s3a://)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Run directory to create.")],
    reference_date: ReferenceOption = None,
    catalog: CatalogOption = DEFAULT_CATALOG_DIR,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite an existing run directory.")] = False,
    charts: Annotated[bool, typer.Option("--charts/--no-charts", help="Write PNG and HTML charts.")] = True,
    engine: Annotated[
        str, typer.Option("--engine", help="duckdb (one machine) or spark (needs the spark extra: docs/SCALE.md).")
    ] = "duckdb",
    master: Annotated[
        str | None, typer.Option("--master", help="Spark master URL, e.g. local[4] or spark://host:7077.")
    ] = None,
    spark_conf: Annotated[
        list[str] | None, typer.Option("--spark-conf", help="A Spark setting KEY=VALUE; may be repeated.")
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option("--shard", help="Only shard i of n of the residents (i/n, e.g. 0/4); merge with merge-shards."),
    ] = None,
) -> None:
    """Find every resident's chronic pathologies, level and cluster; print the summary and write the charts."""
    from presa.stratify.engine import Shard
    from presa.stratify.pipeline import run_stratification
    from presa.stratify.spark import is_uri

    the_catalog = load_catalog(catalog)
    reference = parse_date(reference_date, "--reference-date") if reference_date else None
    spark = spark_options(engine, master, spark_conf or [])
    part = Shard.parse(shard) if shard else None
    with progress_steps() as steps:
        result = run_stratification(
            flows if spark is not None and is_uri(flows) else Path(flows),
            out,
            the_catalog,
            reference,
            replace=replace,
            spark=spark,
            shard=part,
            on_load_progress=steps.phase("Validating flows"),
            on_engine_progress=steps.phase("Stratifying"),
        )
    print_load_counts(result.load)
    console.print(
        f"Stratified {result.engine.population:,} residents in {result.seconds:.1f} s "
        f"(engine {result.engine.seconds['engine']:.1f} s) into {out}"
    )
    from presa.stratify.report import report_run  # matplotlib: loaded by the commands that draw

    report_run(out, console, charts=charts)


@app.command("merge-shards")
@fail_cleanly
def merge_shards_command(
    shards: Annotated[list[Path], typer.Argument(help="The runs of shards 0/n to n-1/n of one population.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to create for the whole population.")],
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite an existing run directory.")] = False,
    charts: Annotated[bool, typer.Option("--charts/--no-charts", help="Write PNG and HTML charts.")] = True,
) -> None:
    """Merge the runs of the shards of a population (stratify --shard i/n) into the run of the whole."""
    from presa.stratify.report import report_run  # matplotlib: loaded by the commands that draw
    from presa.stratify.shards import merge_shards

    result = merge_shards(shards, out, replace=replace)
    console.print(f"Merged {result.shards} shards: {result.population:,} residents in {result.seconds:.1f} s")
    report_run(out, console, charts=charts)


def spark_options(engine: str, master: str | None, settings: list[str]) -> SparkOptions | None:
    """The Spark session's settings for --engine spark; None for DuckDB."""
    from presa.stratify.spark import SparkOptions

    if engine not in ("duckdb", "spark"):
        raise typer.BadParameter(f"unknown engine {engine!r}: duckdb or spark", param_hint="--engine")
    if engine == "duckdb":
        if master or settings:
            raise typer.BadParameter("only with --engine spark", param_hint="--master/--spark-conf")
        return None
    conf = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{setting!r} is not KEY=VALUE", param_hint="--spark-conf")
        conf[key.strip()] = value.strip()
    return SparkOptions(master=master, conf=conf)


@app.command()
@fail_cleanly
def explain(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    resident_id: Annotated[str, typer.Argument(help="The resident's pseudonymous id.")],
) -> None:
    """Why a resident got their pathologies and level, criterion by criterion and record by record."""
    from presa.stratify.explain import explain_resident, render_explanation

    render_explanation(explain_resident(run, resident_id), console)


@app.command()
@fail_cleanly
def diff(
    run_a: Annotated[Path, typer.Argument(help="The run to compare from (e.g. the adopted catalog).")],
    run_b: Annotated[Path, typer.Argument(help="The run to compare to (e.g. a new catalog or reference date).")],
    changed: Annotated[
        Path | None, typer.Option("--changed", help="Write the residents who changed to this Parquet file.")
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Rows to show per table.")] = 20,
) -> None:
    """Compare two runs: residents per level transition and pathologies gained or lost."""
    from presa.stratify.diff import diff_runs, render_diff

    render_diff(diff_runs(run_a, run_b, changed), console, top=top)
    if changed is not None:
        console.print(f"Residents who changed: {changed}")


@app.command()
@fail_cleanly
def accuracy(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    truth: Annotated[Path, typer.Option("--truth", help="Parquet file of (resident_id, pathology_id) true cases.")],
) -> None:
    """Sensitivity, specificity and PPV of each pathology against a ground truth (e.g. the synthetic one)."""
    from presa.stratify.accuracy import measure_accuracy, overall

    results = measure_accuracy(run, truth)
    table = Table(title="Accuracy against the ground truth")
    for column in ("pathology", "true cases", "found", "sensitivity", "specificity", "PPV"):
        table.add_column(column, justify="left" if column == "pathology" else "right")
    for r in (*results, overall(results)):
        table.add_row(
            r.pathology_id,
            f"{r.true_positives + r.false_negatives:,}",
            f"{r.true_positives + r.false_positives:,}",
            _percent(r.sensitivity),
            _percent(r.specificity),
            _percent(r.ppv),
        )
    console.print(table)


@app.command(name="catalog")
@fail_cleanly
def show_catalog(
    catalog: CatalogOption = DEFAULT_CATALOG_DIR,
    sql: Annotated[bool, typer.Option("--sql", help="Print the compiled SQL instead of the pathology table.")] = False,
    dialect: Annotated[str, typer.Option("--dialect", help="SQL dialect for --sql: duckdb or spark.")] = "duckdb",
    reference_date: Annotated[str, typer.Option("--reference-date", help="Reference date for --sql.")] = "2025-12-31",
) -> None:
    """Validate a catalog and show its pathologies, or the SQL it compiles to."""
    the_catalog = load_catalog(catalog)
    if sql:
        if dialect not in ("duckdb", "spark"):
            raise ValueError(f"--dialect: '{dialect}' is not one of duckdb, spark")
        from presa.stratify.compile import compile_catalog

        program = compile_catalog(the_catalog, parse_date(reference_date, "--reference-date"))
        typer.echo(program.sql(dialect))
        return
    table = Table(title=f"{the_catalog.header.name} — version {the_catalog.version} ({the_catalog.digest})")
    for column in ("priority", "id", "name", "macro-area", "criteria", "confidence"):
        table.add_column(column)
    leaves_per_pathology: dict[str, int] = {}
    for leaf in the_catalog.leaves():
        leaves_per_pathology[leaf.pathology_id] = leaves_per_pathology.get(leaf.pathology_id, 0) + 1
    for p in sorted(the_catalog.pathologies, key=lambda p: p.priority):
        table.add_row(str(p.priority), p.id, p.name_it, p.macro_area, str(leaves_per_pathology[p.id]), p.confidence)
    console.print(table)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


import presa.cli.care  # noqa: E402  (registers load, invite, serve and plan)
import presa.cli.followup  # noqa: E402, F401  (registers worker, reconcile and worklist-refresh)
