"""lego-edit: build, train and evaluate a Lego-Edit style image editor.

The package is importable without Snakemake. ``lego_edit.workflow`` (the workflow language) imports
neither torch nor any model code, so validating a workflow starts fast.
"""

__version__ = "0.1.0"
