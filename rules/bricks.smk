# Brick models: train every model-backed brick and report its held-out figures.


rule prepare_base_vlm:
    input:
        instructions=expand(RUN.instructions(), domain=DOMAINS),
        placement=RUN.shards("placement"),
        captioning=RUN.shards("captioning"),
    output:
        base=directory(RUN.builder("base")),
    log:
        "logs/prepare_base_vlm.log",
    benchmark:
        "benchmarks/prepare_base_vlm/prepare_base_vlm.tsv"
    priority: 90
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb(4000),
        runtime=get_runtime(20),
    params:
        seed=config["seed"],
        vocab_size=config["builder"]["vocab_size"],
        vlm=config["builder"]["vlm"],
    script:
        "../workflow_scripts/prepare_base_vlm.py"


rule train_segmentation:
    input:
        shards=RUN.shards("segmentation"),
    output:
        model=directory(RUN.segmentation),
    log:
        "logs/train_segmentation.log",
    benchmark:
        "benchmarks/train_segmentation/train_segmentation.tsv"
    # The longest chain to stage 2 (its execution reward runs RES): start it first, with the edit base.
    priority: 95
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb(4000),
        runtime=get_runtime(60),
        gpu=get_gpus("segmentation"),
    params:
        seed=config["seed"],
        section=brick_section("segmentation"),
        checkpoints=RUN.checkpoints("segmentation"),
    script:
        "../workflow_scripts/train_segmentation.py"


rule train_vlm_brick:
    input:
        base=RUN.builder("base"),
        shards=RUN.shards("{vlm_family}"),
    output:
        adapter=directory(RUN.brick("{vlm_family}")),
    log:
        "logs/train_vlm_brick/{vlm_family}.log",
    benchmark:
        "benchmarks/train_vlm_brick/{vlm_family}.tsv"
    priority: 40
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb(4000),
        runtime=get_runtime(60),
        gpu=get_vlm_brick_gpus,
    params:
        seed=config["seed"],
        section=get_vlm_brick_section,
        checkpoints=RUN.checkpoints("{vlm_family}"),
    script:
        "../workflow_scripts/train_vlm_brick.py"


rule train_edit_base:
    input:
        shards=RUN.shards("edit"),
    output:
        model=directory(RUN.edit_base),
    log:
        "logs/train_edit_base.log",
    benchmark:
        "benchmarks/train_edit_base/train_edit_base.tsv"
    priority: 85
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb(6000),
        runtime=get_runtime(120),
        gpu=get_gpus("edit"),
    params:
        seed=config["seed"],
        section=brick_section("edit"),
        checkpoints=RUN.checkpoints("edit_base"),
    script:
        "../workflow_scripts/train_edit_base.py"


rule train_edit_lora:
    input:
        shards=RUN.shards("edit"),
        base=RUN.edit_base,
    output:
        adapter=directory(RUN.edit_lora()),
    log:
        "logs/train_edit_lora/{brick}.log",
    benchmark:
        "benchmarks/train_edit_lora/{brick}.tsv"
    priority: 30
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb(4000),
        runtime=get_runtime(60),
        gpu=get_gpus("edit"),
    params:
        seed=config["seed"],
        section=brick_section("edit"),
        checkpoints=RUN.checkpoints("edit_lora/{brick}"),
    script:
        "../workflow_scripts/train_edit_lora.py"


rule make_critic_samples:
    input:
        unpack(get_critic_sample_inputs),
    output:
        shards=directory(RUN.shards("critic_executed")),
    log:
        "logs/make_critic_samples.log",
    benchmark:
        "benchmarks/make_critic_samples/make_critic_samples.tsv"
    priority: 70
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb(4000),
        runtime=get_runtime(60),
        gpu=get_gpus("critic"),
    params:
        seed=config["seed"],
        section=config["bricks"]["critic"]["executed"],
        samples_per_shard=config["data"]["shards"]["samples_per_shard"],
    script:
        "../workflow_scripts/make_critic_samples.py"


rule train_critic:
    input:
        unpack(get_critic_inputs),
    output:
        model=directory(RUN.critic),
    log:
        "logs/train_critic.log",
    benchmark:
        "benchmarks/train_critic/train_critic.tsv"
    priority: 70
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb(6000),
        runtime=get_runtime(120),
        gpu=get_gpus("critic"),
    params:
        seed=config["seed"],
        section=brick_section("critic"),
        checkpoints=RUN.checkpoints("critic"),
    script:
        "../workflow_scripts/train_critic.py"


rule summarize_bricks:
    input:
        segmentation=RUN.segmentation,
        placement=RUN.brick("placement"),
        captioning=RUN.brick("captioning"),
        edit_base=RUN.edit_base,
        edit_lora=expand(RUN.edit_lora(), brick=EDIT_BRICKS),
        critic=RUN.critic,
    output:
        table=report(
            RUN.bricks_summary("md"),
            caption="../report/bricks.rst",
            category="2. Bricks",
            subcategory="held-out figures",
        ),
        json=RUN.bricks_summary("json"),
    log:
        "logs/summarize_bricks.log",
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../workflow_scripts/summarize_bricks.py"
