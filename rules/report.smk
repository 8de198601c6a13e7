# Report: data statistics and every training curve (the tables and grids come from the stage rules).


rule plot_data_stats:
    input:
        scenes=RUN.scenes,
        instructions=expand(RUN.instructions(), domain=DOMAINS),
    output:
        stats=report(
            RUN.report("data_stats.png"),
            caption="../report/data_stats.rst",
            category="1. Data",
        ),
        samples=report(
            RUN.report("data_samples.png"),
            caption="../report/data_samples.rst",
            category="1. Data",
        ),
    log:
        "logs/plot_data_stats.log",
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../workflow_scripts/plot_data_stats.py"


rule plot_training_curve:
    input:
        model=get_model_dir,
    output:
        curve=report(
            RUN.curve(),
            caption="../report/curve.rst",
            category="3. Training curves",
            labels={"model": "{model}"},
        ),
    log:
        "logs/plot_training_curve/{model}.log",
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../workflow_scripts/plot_training_curve.py"
