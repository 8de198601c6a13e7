"""Batch offline editing of image folders: inputs and mapping files, the manifest, resume, chunks."""

from .batch import BatchEditor, EditConfig, EditSummary, edit_chunk, edit_folder
from .inputs import EditItem, MappingError, collect_items, list_images, output_stems, read_mapping, select_chunk
from .manifest import Manifest, ManifestError, merge_manifests, read_manifest
from .sources import BUILDER_STAGES, EditError, model_inputs

__all__ = [
    "BUILDER_STAGES",
    "BatchEditor",
    "EditConfig",
    "EditError",
    "EditItem",
    "EditSummary",
    "Manifest",
    "ManifestError",
    "MappingError",
    "collect_items",
    "edit_chunk",
    "edit_folder",
    "list_images",
    "merge_manifests",
    "model_inputs",
    "output_stems",
    "read_manifest",
    "read_mapping",
    "select_chunk",
]
