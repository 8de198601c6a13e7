# Builder data from real images (data.builder_sources): the sources' rows read and checked, a teacher VLM's workflow
# for each, kept only when the trained bricks' result passes the filter; the Builder's gt and open tables from them.


rule read_builder_sources:
    input:
        get_builder_source_files,
    output:
        rows=RUN.builder_sources("rows.parquet"),
        rejected=RUN.builder_sources("rejected.parquet"),
        images=directory(RUN.builder_sources("images")),
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
        verdicts=RUN.teacher_chunk(),
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
        chunk=get_scatter_chunk,
    script:
        "../workflow_scripts/teacher_workflows.py"


rule gather_builder_tables:
    input:
        verdicts=gather.teacherchunk(RUN.teacher_chunk()),
        shapes_gt=RUN.instructions("gt"),
        shapes_open=RUN.instructions("open"),
        rejected=RUN.builder_sources("rejected.parquet"),
    output:
        gt=RUN.builder_data("gt.parquet"),
        open=RUN.builder_data("open.parquet"),
        verdicts=RUN.builder_data("verdicts.parquet"),
        summary=report(
            RUN.builder_data("summary.md"),
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
        rows=RUN.builder_sources("rows.parquet"),
    output:
        listing=RUN.builder_sources("placement.parquet"),
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
