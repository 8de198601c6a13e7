# Helpers for the stage files in rules/: config validation, paths and parameter lookups (no rules here).
import sys
from pathlib import Path

from snakemake.utils import validate

validate(config, schema="../config/schema.yaml")

sys.path.insert(0, str(Path(workflow.basedir)))
from lego_edit.config_checks import check_config  # noqa: E402
from lego_edit.evaluation.protocols import protocol_file  # noqa: E402
from lego_edit.layout import RunLayout  # noqa: E402
from lego_edit.pipeline import sort_keys_in_place  # noqa: E402

check_config(config)
sort_keys_in_place(config)  # params are compared by repr: key order in a config file must not rerun jobs

FAMILIES = list(config["data"]["shards"]["families"])
DOMAINS = ["gt", "open"]
BUILDER_SOURCES = list(config["data"].get("builder_sources") or [])
TEACHER = config["data"]["teacher"]
RUN = RunLayout("results")  # every path of a run's products, for the rules here and the library alike


wildcard_constraints:
    family="|".join(FAMILIES),
    domain="gt|open",
    vlm_family="placement|captioning",
    builder="|".join(["base", "sft", "grpo_gt", "grpo_critic", "api", "oracle"]),
    evalset="shapes_gt|shapes_open|gedit|imgedit",
    model="[A-Za-z0-9_]+",
    brick="|".join(config["bricks"]["edit"]["bricks"]),


def get_final_targets():
    targets = [RUN.scenes]
    targets += expand(RUN.instructions(), domain=DOMAINS)
    targets += expand(RUN.shards(), family=FAMILIES)
    if BUILDER_SOURCES:
        targets += [RUN.builder_data("summary.md")]
    targets += [RUN.bricks_summary("md"), RUN.eval_product("tables.md")]
    if (config.get("edit") or {}).get("folder"):
        targets.append(RUN.edit_manifest)
    targets += get_report_targets()
    return targets


def get_instruction_params(wildcards):
    return {
        **config["data"]["instructions"][wildcards.domain],
        "categories": config["data"]["instructions"]["categories"],
    }


def placement_from_sources():
    """ADD-PRED learns from the builder sources' add rows (data.teacher.placement) unless a listing is given."""
    return bool(BUILDER_SOURCES) and TEACHER["placement"] and "placement" not in config["data"]["shards"]["sources"]


def get_shard_inputs(wildcards):
    inputs = {"scenes": RUN.scenes}
    if wildcards.family == "critic":  # the critic learns from instructions and their targets
        inputs["instructions"] = expand(RUN.instructions(), domain=DOMAINS)
    if wildcards.family == "placement" and placement_from_sources():
        inputs["listing"] = RUN.builder_sources("placement.parquet")
    return inputs


def get_shard_params(wildcards):
    family = config["data"]["shards"]["families"][wildcards.family]
    return {
        "samples_per_shard": config["data"]["shards"]["samples_per_shard"],
        **family,
    }


def get_shard_source(wildcards):
    if wildcards.family == "placement" and placement_from_sources():
        return {"listing": RUN.builder_sources("placement.parquet"), "root": "."}
    return config["data"]["shards"]["sources"].get(wildcards.family)


# --- Builder data from real images (rules/teacher.smk) ---


def builder_table(domain):
    """The instruction table the Builder's stages learn from: the shapes world's, or, with data.builder_sources,
    the teacher's kept rows (gt) and the other real instructions (open) mixed with it."""
    if BUILDER_SOURCES:
        return RUN.builder_data(f"{domain}.parquet")
    return RUN.instructions(domain)


def get_builder_source_files(wildcards):
    """The listing files (or dataset folders) of the builder sources: a changed listing rereads them."""
    return [source["path"] for source in BUILDER_SOURCES]


def get_teacher_inputs(wildcards):
    """The real rows and every trained brick the teacher's workflows may call."""
    return {"rows": RUN.builder_sources("rows.parquet"), **get_trained_bricks(wildcards)}


def get_teacher_chunk_params(wildcards):
    """What a chunk's verdicts depend on (mixing and placement are the gather's and the shards' business)."""
    return {k: v for k, v in TEACHER.items() if k not in ("shapes_fraction", "placement", "chunks", "max_side")}


EDIT_BRICKS = list(config["bricks"]["edit"]["bricks"])


def get_gpus(section):
    """The GPU count a training section asks for (0 on a CPU-only run)."""
    return int(config["bricks"][section]["gpus"])


def get_mem_mb(base_mb):
    """Memory that grows with each retry (a job killed for memory gets more the next time)."""
    return lambda wildcards, attempt: base_mb * attempt


def get_runtime(base_minutes):
    return lambda wildcards, attempt: base_minutes * attempt


def without_gpus(section):
    """A training section as the job's params: its GPU count is the job's `gpu` resource instead, so a profile
    may change it (set-resources) without rerunning the training."""
    return {k: v for k, v in section.items() if k != "gpus"}


def brick_section(name):
    return without_gpus(config["bricks"][name])


def get_vlm_brick_section(wildcards):
    return without_gpus(config["bricks"][wildcards.vlm_family])


def get_vlm_brick_gpus(wildcards):
    return get_gpus(wildcards.vlm_family)


def builder_stage_section(stage):
    """What a Builder stage's job reads of the ``builder`` block (its own settings and the prompt style): the
    other stages' settings are left out, so changing them reruns nothing here."""
    builder = config["builder"]
    return {"stage": stage, stage: builder[stage], "prompt_style": builder["prompt_style"]}


def get_builder_gpus(wildcards):
    return int(config["builder"]["gpus"])


def get_trained_bricks(wildcards):
    """Every trained brick a workflow may call (the critic's samples, stage 2's execution reward, stage 3), named
    as ``layout.BrickModels`` names them: the job hands them to the library by these names."""
    return {
        "segmentation": RUN.segmentation,
        "base_vlm": RUN.builder("base"),
        "placement": RUN.brick("placement"),
        "captioning": RUN.brick("captioning"),
        "edit_base": RUN.edit_base,
        "edit_lora": expand(RUN.edit_lora(), brick=EDIT_BRICKS),
    }


def get_critic_sample_inputs(wildcards):
    """GT instructions and scenes, every trained brick, and the stage-1 Builder whose answers are executed too."""
    inputs = {
        **get_trained_bricks(wildcards),
        "instructions": RUN.instructions("gt"),
        "scenes": RUN.scenes,
    }
    executed = config["bricks"]["critic"]["executed"]
    if executed["builder_answers"] > 0:
        inputs["builder"] = RUN.builder("sft")
        if executed["open_train_instructions"] + executed["open_val_instructions"] > 0:
            inputs["open_instructions"] = RUN.instructions("open")
    return inputs


def get_critic_inputs(wildcards):
    """The clean critic shards; the film critic also learns from the trained bricks' outputs, the vlm critic
    starts from the base VLM."""
    critic = config["bricks"]["critic"]
    inputs = {"shards": RUN.shards("critic")}
    if critic["backend"] == "local" and critic["architecture"] == "vlm":
        inputs["base"] = RUN.builder("base")
    elif critic["backend"] == "local" and critic["executed"]["train_instructions"] > 0:
        inputs["executed"] = RUN.shards("critic_executed")
    return inputs


def get_stage2_inputs(wildcards):
    """Stage 2 starts from stage 1; its execution reward runs the sampled workflows with every trained brick."""
    inputs = {"base": RUN.builder("sft"), "instructions": builder_table("gt")}
    if float(config["builder"]["grpo_gt"].get("reward_weights", {}).get("execution", 1.0)) != 0:
        inputs.update(get_trained_bricks(wildcards))
    return inputs


def get_stage3_inputs(wildcards):
    """Stage 3 executes sampled workflows with every trained brick and scores them with the critic."""
    inputs = {
        "base": RUN.builder("grpo_gt"),
        "instructions": builder_table("open"),
        "critic": RUN.critic,
        **get_trained_bricks(wildcards),
    }
    if float(config["builder"]["grpo_critic"].get("gt_share", 0)) > 0:
        inputs["gt_instructions"] = builder_table("gt")
    return inputs


def eval_sets():
    ev = config["evaluation"]
    sets = ["shapes_gt", "shapes_open"]
    if ev["gedit"]["path"]:
        sets.append("gedit")
    if ev["imgedit"]["json"]:
        sets.append("imgedit")
    return sets


def eval_builders():
    builders = list(config["evaluation"]["builders"])
    if config["evaluation"].get("api_builder"):
        builders.append("api")
    return builders


def get_all_eval_chunks():
    chunks = []
    for builder in eval_builders():
        for evalset in eval_sets():
            if builder == "oracle" and evalset not in ("shapes_gt",):
                continue  # only the GT split has GT workflows to run
            chunks += gather.evalchunk(RUN.eval_chunk(builder, evalset))
    return chunks


def get_eval_chunk_inputs(wildcards):
    inputs = {**get_trained_bricks(wildcards), "critic": RUN.critic}
    if wildcards.builder in ("sft", "grpo_gt", "grpo_critic", "base"):
        inputs["builder"] = RUN.builder(wildcards.builder)
    if get_eval_protocol(wildcards):  # a changed prompt file in the user's checkout reruns the chunk
        inputs["protocol"] = str(protocol_file(wildcards.evalset, get_eval_protocol(wildcards)))
    if wildcards.evalset == "shapes_gt":
        inputs["table"] = RUN.instructions("gt")
    elif wildcards.evalset == "shapes_open":
        inputs["table"] = RUN.instructions("open")
    return inputs


def get_eval_builder_spec(wildcards):
    b = wildcards.builder
    if b == "oracle":
        return {"name": b, "kind": "oracle"}
    if b == "api":
        return {"name": b, "kind": "openai", **config["evaluation"]["api_builder"]}
    return {"name": b, "kind": "vlm", "stage": b}


def get_eval_prompt_style(wildcards):
    if wildcards.builder == "api":
        return config["evaluation"]["api_builder"]["prompt_style"]
    return config["builder"]["prompt_style"]


def get_eval_protocol(wildcards):
    """The checkout of the set's published evaluation code (evaluation.protocols), or None."""
    return (config["evaluation"].get("protocols") or {}).get(wildcards.evalset)


def get_eval_set_spec(wildcards):
    ev = config["evaluation"]
    s = wildcards.evalset
    if s == "shapes_gt":
        return {"max_items": ev["shapes_gt_items"]}
    if s == "shapes_open":
        return {"max_items": ev["shapes_open_items"]}
    if s == "gedit":
        return {"max_items": ev["benchmark_items"], **ev["gedit"]}
    return {"max_items": ev["benchmark_items"], **ev["imgedit"]}


def model_dirs():
    """Every trained model, by the name of its training curve (a judge behind an endpoint has none)."""
    dirs = RUN.model_folders()
    if config["bricks"]["critic"]["backend"] != "local":
        del dirs["critic"]
    return {k: v for k, v in dirs.items() if not k.startswith("edit_lora_") or k[len("edit_lora_") :] in EDIT_BRICKS}


def get_model_dir(wildcards):
    return model_dirs()[wildcards.model]


def get_report_targets():
    return [RUN.report("data_stats.png")] + expand(RUN.curve(), model=list(model_dirs()))


# --- batch editing of a folder (rules/edit.smk) ---


def edit_section():
    section = config.get("edit") or {}
    if not section.get("folder"):
        raise ValueError("config edit.folder is not set: name the image folder to batch-edit")
    return section


def edit_model_inputs():
    """Trained models the batch needs: all of them for a Builder, the fixed workflow's own otherwise."""
    # imported here, so that parsing the Snakefile stays light
    from lego_edit.editing.sources import model_inputs

    trained = config.get("bricks", {}).get("edit", {}).get("bricks")
    return model_inputs(
        edit_section().get("workflow"),
        RUN.root,
        None if trained is None else tuple(trained),
    )


def get_edit_chunk_inputs(wildcards):
    e = edit_section()
    inputs = {"folder": e["folder"]}
    if e.get("mapping"):
        inputs["mapping"] = e["mapping"]
    if e.get("workflow"):
        inputs["fixed_workflow"] = e["workflow"]
    else:
        inputs["builder"] = RUN.builder(e.get("builder") or "grpo_critic")
    models = edit_model_inputs()
    if models:
        inputs["models"] = models
    return inputs


def get_edit_params(wildcards):
    e = edit_section()
    return {
        "folder": e["folder"],
        "instruction": e.get("instruction"),
        "mapping": e.get("mapping"),
        "workflow": e.get("workflow"),
        "builder": e.get("builder") or "grpo_critic",
        "run": RUN.root if (not e.get("workflow") or edit_model_inputs()) else None,
        "batch_size": int(e.get("batch_size") or 16),
        "max_side": int(e.get("max_side", 1024)),
        "seed": config["seed"],
    }


def get_edit_gpus(wildcards):
    return int((config.get("edit") or {}).get("gpus") or 0)


def get_edit_output_dir(wildcards):
    """The mirrored output tree all chunks write into."""
    return RUN.edit_tree


def get_scatter_chunk(wildcards):
    """A scatter job's chunk as the library takes it: (index from 0, count), from Snakemake's '2-of-8'."""
    number, count = (int(v) for v in wildcards.scatteritem.split("-of-"))
    return number - 1, count
