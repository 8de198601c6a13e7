# Batch editing of an image folder (config edit.folder): the Builder (or a fixed workflow, edit.workflow) edits
# every image, in edit.chunks scatter jobs (as the evaluation's) that each take every N-th image by sorted relative
# path. All chunks write into one mirrored tree, RUN.edit_tree, and resume from their own running manifest there
# when rerun; each chunk's declared output is written only once it is finished, and the gather rule merges them
# into RUN.edit_manifest. Nothing here runs unless edit.folder is set: the input functions refuse.


rule edit_folder_chunk:
    input:
        unpack(get_edit_chunk_inputs),
    output:
        manifest=RUN.edit_chunk(),
    log:
        "logs/edit/edit_folder_chunk/{scatteritem}.log",
    benchmark:
        "benchmarks/edit/edit_folder_chunk/{scatteritem}.tsv"
    conda:
        "../envs/lego-edit.yaml"
    threads: 2
    resources:
        mem_mb=get_mem_mb(8000),
        runtime=get_runtime(240),
        gpu=get_edit_gpus,
    params:
        edit=get_edit_params,
        output_dir=get_edit_output_dir,
        chunk=get_scatter_chunk,
    script:
        "../workflow_scripts/edit_folder_chunk.py"


rule gather_edit_manifest:
    input:
        manifests=gather.editchunk(RUN.edit_chunk()),
    output:
        manifest=RUN.edit_manifest,
    log:
        "logs/edit/gather_edit_manifest.log",
    benchmark:
        "benchmarks/edit/gather_edit_manifest.tsv"
    conda:
        "../envs/lego-edit.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/gather_edit_manifest.py"
