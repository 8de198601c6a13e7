# Data stage: shapes-world scenes, instructions (GT and open-domain) and brick training shards.


rule make_scenes:
    output:
        table=RUN.scenes,
        images=directory(RUN.scene_images),
    log:
        "logs/make_scenes.log",
    benchmark:
        "benchmarks/make_scenes/make_scenes.tsv"
    priority: 100
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seed=config["seed"],
        scenes=config["data"]["scenes"],
    script:
        "../workflow_scripts/make_scenes.py"


rule make_instructions:
    input:
        scenes=RUN.scenes,
    output:
        table=RUN.instructions(),
        targets=directory(RUN.targets()),
    log:
        "logs/make_instructions/{domain}.log",
    benchmark:
        "benchmarks/make_instructions/{domain}.tsv"
    priority: 100
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seed=config["seed"],
        instructions=get_instruction_params,
    script:
        "../workflow_scripts/make_instructions.py"


rule make_shards:
    input:
        unpack(get_shard_inputs),
    output:
        shards=directory(RUN.shards()),
    log:
        "logs/make_shards/{family}.log",
    benchmark:
        "benchmarks/make_shards/{family}.tsv"
    priority: 100
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        seed=config["seed"],
        shards=get_shard_params,
        source=get_shard_source,
    script:
        "../workflow_scripts/make_shards.py"
