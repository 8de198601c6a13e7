# Evaluation: every Builder (and the GT-workflow oracle) batch-edits every evaluation set, in chunks.


rule edit_eval_chunk:
    input:
        unpack(get_eval_chunk_inputs),
    output:
        rows=RUN.eval_chunk(),
        images=directory(RUN.eval_images()),
    log:
        "logs/edit_eval_chunk/{builder}/{evalset}/{scatteritem}.log",
    benchmark:
        "benchmarks/edit_eval_chunk/{builder}/{evalset}/{scatteritem}.tsv"
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb(4000),
        runtime=get_runtime(60),
        gpu=config["evaluation"]["gpus"],
    params:
        seed=config["seed"],
        builder=get_eval_builder_spec,
        evalset=get_eval_set_spec,
        style=get_eval_prompt_style,
        seconds=config["evaluation"]["execution_seconds"],
        judge=config["evaluation"]["judge"],
        protocol=get_eval_protocol,
        chunk=get_scatter_chunk,
    script:
        "../workflow_scripts/edit_eval_chunk.py"


rule summarize_eval:
    input:
        rows=get_all_eval_chunks(),
        gt=RUN.instructions("gt"),
    output:
        markdown=RUN.eval_product("tables.md"),
        builders=report(
            RUN.eval_product("builders.csv"),
            caption="../report/eval_builders.rst",
            category="4. Evaluation",
            subcategory="Builders",
        ),
        categories=report(
            RUN.eval_product("categories.csv"),
            caption="../report/eval_categories.rst",
            category="4. Evaluation",
            subcategory="per category",
        ),
        stages=report(
            RUN.eval_product("stages.csv"),
            caption="../report/eval_stages.rst",
            category="4. Evaluation",
            subcategory="stage against stage",
        ),
        reward_model=report(
            RUN.eval_product("reward_model.csv"),
            caption="../report/eval_reward_model.rst",
            category="4. Evaluation",
            subcategory="reward model",
        ),
        judges=report(
            RUN.eval_product("judges.csv"),
            caption="../report/eval_judges.rst",
            category="4. Evaluation",
            subcategory="judges",
        ),
        per_item=RUN.eval_product("items.parquet"),
        grids=report(
            directory(RUN.eval_product("grids")),
            patterns=["{category}.png"],
            caption="../report/eval_grids.rst",
            category="4. Evaluation",
            subcategory="before / after",
            labels={"category": "{category}"},
        ),
    log:
        "logs/summarize_eval.log",
    benchmark:
        "benchmarks/summarize_eval/summarize_eval.tsv"
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        grid_samples=config["evaluation"]["grid_samples"],
    script:
        "../workflow_scripts/summarize_eval.py"
