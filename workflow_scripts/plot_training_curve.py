"""Rule plot_training_curve: a trained model's curve for the report, drawn from its metrics.jsonl."""

from lego_edit.evaluation.training_curves import curve_title, plot_training_curve

sm = snakemake  # noqa: F821
files = plot_training_curve(sm.input.model, sm.output.curve, curve_title(sm.wildcards.model))
with open(sm.log[0], "w") as f:
    f.write("drew the curve from " + ", ".join(map(str, files)) + "\n")
