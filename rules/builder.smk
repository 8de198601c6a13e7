# The Builder: stage 1 SFT, stage 2 GRPO with GT-based rewards, stage 3 GRPO scored by the critic.


rule train_builder_sft:
    input:
        base=RUN.builder("base"),
        instructions=builder_table("gt"),
    output:
        model=directory(RUN.builder("sft")),
    log:
        "logs/train_builder_sft.log",
    benchmark:
        "benchmarks/train_builder_sft/train_builder_sft.tsv"
    priority: 80
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb(6000),
        runtime=get_runtime(120),
        gpu=get_builder_gpus,
    params:
        seed=config["seed"],
        section=builder_stage_section("sft"),
        checkpoints=RUN.checkpoints("builder_sft"),
    script:
        "../workflow_scripts/train_builder.py"


rule train_builder_grpo_gt:
    input:
        unpack(get_stage2_inputs),
    output:
        model=directory(RUN.builder("grpo_gt")),
    log:
        "logs/train_builder_grpo_gt.log",
    benchmark:
        "benchmarks/train_builder_grpo_gt/train_builder_grpo_gt.tsv"
    priority: 75
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb(6000),
        runtime=get_runtime(120),
        gpu=get_builder_gpus,
    params:
        seed=config["seed"],
        section=builder_stage_section("grpo_gt"),
        checkpoints=RUN.checkpoints("builder_grpo_gt"),
    script:
        "../workflow_scripts/train_builder.py"


rule train_builder_grpo_critic:
    input:
        unpack(get_stage3_inputs),
    output:
        model=directory(RUN.builder("grpo_critic")),
    log:
        "logs/train_builder_grpo_critic.log",
    benchmark:
        "benchmarks/train_builder_grpo_critic/train_builder_grpo_critic.tsv"
    priority: 75
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb(8000),
        runtime=get_runtime(180),
        gpu=get_builder_gpus,
    params:
        seed=config["seed"],
        section=builder_stage_section("grpo_critic"),
        checkpoints=RUN.checkpoints("builder_grpo_critic"),
    script:
        "../workflow_scripts/train_builder.py"
