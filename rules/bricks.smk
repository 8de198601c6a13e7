# Brick models: train every model-backed brick and report its held-out figures.


rule prepare_base_vlm:
    input:
        instructions=expand("results/data/instructions/{domain}.parquet", domain=DOMAINS),
        placement="results/data/shards/placement",
        captioning="results/data/shards/captioning",
    output:
        base=directory("results/builder/base"),
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
        shards="results/data/shards/segmentation",
    output:
        model=directory("results/bricks/segmentation"),
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
        checkpoints="results/checkpoints/segmentation",
    script:
        "../workflow_scripts/train_segmentation.py"


rule train_vlm_brick:
    input:
        base="results/builder/base",
        shards="results/data/shards/{vlm_family}",
    output:
        adapter=directory("results/bricks/{vlm_family}"),
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
        checkpoints="results/checkpoints/{vlm_family}",
    script:
        "../workflow_scripts/train_vlm_brick.py"


rule train_edit_base:
    input:
        shards="results/data/shards/edit",
    output:
        model=directory("results/bricks/edit_base"),
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
        checkpoints="results/checkpoints/edit_base",
    script:
        "../workflow_scripts/train_edit_base.py"


rule train_edit_lora:
    input:
        shards="results/data/shards/edit",
        base="results/bricks/edit_base",
    output:
        adapter=directory("results/bricks/edit_lora/{brick}"),
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
        checkpoints="results/checkpoints/edit_lora/{brick}",
    script:
        "../workflow_scripts/train_edit_lora.py"


rule make_critic_samples:
    input:
        unpack(get_critic_sample_inputs),
    output:
        shards=directory("results/data/shards/critic_executed"),
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
        model=directory("results/bricks/critic"),
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
        checkpoints="results/checkpoints/critic",
    script:
        "../workflow_scripts/train_critic.py"


rule summarize_bricks:
    input:
        segmentation="results/bricks/segmentation",
        placement="results/bricks/placement",
        captioning="results/bricks/captioning",
        edit_base="results/bricks/edit_base",
        edit_lora=expand("results/bricks/edit_lora/{brick}", brick=EDIT_BRICKS),
        critic="results/bricks/critic",
    output:
        table=report(
            "results/bricks/summary.md",
            caption="../report/bricks.rst",
            category="2. Bricks",
            subcategory="held-out figures",
        ),
        json="results/bricks/summary.json",
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
