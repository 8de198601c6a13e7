# Builder data from real images (data.builder_sources): the sources' rows read and checked, a teacher VLM's workflow
# for each, kept only when the trained bricks' result passes the filter; the Builder's gt and open tables from them.


rule read_builder_sources:
    input:
        get_builder_source_files,
    output:
        rows="results/data/builder_sources/rows.parquet",
        rejected="results/data/builder_sources/rejected.parquet",
        images=directory("results/data/builder_sources/images"),
    log:
        "logs/read_builder_sources.log",
    benchmark:
        "benchmarks/read_builder_sources/read_builder_sources.tsv"
    priority: 100
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        sources=config["data"]["builder_sources"],
        max_side=config["data"]["teacher"]["max_side"],
    script:
        "../workflow_scripts/read_builder_sources.py"


rule teacher_workflows:
    input:
        unpack(get_teacher_inputs),
    output:
        verdicts="results/data/teacher/chunk_{scatteritem}.parquet",
    log:
        "logs/teacher_workflows/{scatteritem}.log",
    benchmark:
        "benchmarks/teacher_workflows/{scatteritem}.tsv"
    priority: 85
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb(4000),
        runtime=get_runtime(120),
        gpu=config["evaluation"]["gpus"],
    params:
        seed=config["seed"],
        teacher=get_teacher_chunk_params,
        judge=config["evaluation"]["judge"],
    script:
        "../workflow_scripts/teacher_workflows.py"


rule gather_builder_tables:
    input:
        verdicts=gather.teacherchunk("results/data/teacher/chunk_{scatteritem}.parquet"),
        shapes_gt="results/data/instructions/gt.parquet",
        shapes_open="results/data/instructions/open.parquet",
        rejected="results/data/builder_sources/rejected.parquet",
    output:
        gt="results/data/builder/gt.parquet",
        open="results/data/builder/open.parquet",
        verdicts="results/data/builder/verdicts.parquet",
        summary=report(
            "results/data/builder/summary.md",
            caption="../report/builder_data.rst",
            category="1. Data",
            subcategory="Builder data",
        ),
    log:
        "logs/gather_builder_tables.log",
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seed=config["seed"],
        shapes_fraction=config["data"]["teacher"]["shapes_fraction"],
    script:
        "../workflow_scripts/gather_builder_tables.py"


rule make_placement_listing:
    input:
        rows="results/data/builder_sources/rows.parquet",
    output:
        listing="results/data/builder_sources/placement.parquet",
    log:
        "logs/make_placement_listing.log",
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    script:
        "../workflow_scripts/make_placement_listing.py"
