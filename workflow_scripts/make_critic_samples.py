"""Rule make_critic_samples: GT and perturbed workflows executed with the trained bricks, for the critic."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - the lego_edit package

from lego_edit.layout import BrickModels  # noqa: E402
from lego_edit.pipeline import config_from, logging_to  # noqa: E402
from lego_edit.training.critic_samples import CriticSamplesConfig, main  # noqa: E402

sm = snakemake  # noqa: F821
with logging_to(sm.log[0]):
    main(
        config_from(
            CriticSamplesConfig,
            {
                **sm.params.section,
                "instructions": sm.input.instructions,
                "open_instructions": sm.input.get("open_instructions", ""),
                "scenes": sm.input.scenes,
                "builder": sm.input.get("builder", ""),
                "models": BrickModels.from_named(sm.input).as_dict(),  # the trained bricks, by name
                "output_dir": sm.output.shards,
                "seed": sm.params.seed,
                "samples_per_shard": sm.params.samples_per_shard,
            },
        )
    )
