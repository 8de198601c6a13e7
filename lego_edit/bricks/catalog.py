"""The built-in bricks: names, typed signatures and constraints as in the published tool list.

Function bricks are implemented in ``functions.py``. Model-backed bricks are declared here and get an
implementation when trained models are bound (``lego_edit.bricks.models``); until then calling one
raises BrickUnavailableError ("no model configured for RES").
"""

from __future__ import annotations

from ..workflow.values import Kind
from . import functions
from .registry import BrickRegistry
from .spec import BrickSpec, Mode, Port

I, M, S, F = Kind.IMAGE, Kind.MASK, Kind.STR, Kind.FLOAT  # noqa: E741 - short names keep the table readable
RATIO_SIDE = (1.0, 3.0)  # CMI-PRED side ratios: 1 keeps that side, 2 adds one image width/height
RESIZE_RANGE = (0.1, 4.0)

PREDICT = [
    BrickSpec(
        "INVERSE",
        "predict",
        "Subtract mask2 from mask1, or image2 from image1; with mask1 null it inverts mask2",
        (Port("mask1", M), Port("mask2", M), Port("image1", I), Port("image2", I)),
        (Port("mask", M), Port("image", I)),
        "Give either masks or images, never both. Masks give only a mask, images only an image. mask1 may be "
        "null (invert mask2); image1 and image2 must both be given.",
        modes=(Mode(("mask2",), ("mask",), ("mask1",), "masks"), Mode(("image1", "image2"), ("image",), (), "images")),
    ),
    BrickSpec(
        "RES",
        "predict",
        "Segment the object that the prompt refers to",
        (Port("image", I), Port("prompt", S)),
        (Port("mask", M), Port("image", I)),
        "The prompt is English and keeps the locative words and adjectives of the instruction. The output image "
        "is the cut-out object (transparent elsewhere); use it when the user asks for the segmentation itself.",
        backend="model",
    ),
    BrickSpec(
        "SOS",
        "predict",
        "Segment the salient (main) objects of the image",
        (Port("image", I),),
        (Port("mask", M), Port("image", I)),
        "Cannot pick a named object; it segments the salient foreground. The output image is the cut-out.",
        backend="model",
    ),
    BrickSpec(
        "MASK-SEG",
        "predict",
        "Segment the object inside the given mask",
        (Port("image", I), Port("mask", M)),
        (Port("mask", M), Port("image", I)),
        "Needs an image and a mask (for example a mask the user drew).",
        backend="model",
    ),
    BrickSpec(
        "ADD-PRED",
        "predict",
        "Predict where to add the object the prompt describes; with a mask the place lies inside it",
        (Port("image", I), Port("prompt", S), Port("mask", M)),
        (Port("mask", M),),
        "The prompt is a full English phrase with its locative words, such as 'add a black dog on the left'. "
        "Follow it with FILL to draw the object.",
        modes=(Mode(("image", "prompt"), ("mask",), ("mask",)),),
        backend="model",
    ),
    BrickSpec(
        "CMI-PRED",
        "predict",
        "Describe the image in English (for the diffusion bricks); with side ratios also give the expanded "
        "canvas and the mask of its new area",
        (
            Port("image", I),
            Port("left_ratio", F, range=RATIO_SIDE),
            Port("right_ratio", F, range=RATIO_SIDE),
            Port("top_ratio", F, range=RATIO_SIDE),
            Port("bottom_ratio", F, range=RATIO_SIDE),
        ),
        (Port("caption", S), Port("image", I), Port("mask", M)),
        "Give all four ratios or none. A ratio of 1 keeps that side, 2 adds one image width (or height) there; "
        "four equal ratios r mean 'expand r times' in total. For expansion pass both the output image and the "
        "output mask to FILL.",
        modes=(
            Mode(("image",), ("caption",), (), "caption"),
            Mode(
                ("image", "left_ratio", "right_ratio", "top_ratio", "bottom_ratio"),
                ("caption", "image", "mask"),
                (),
                "expand",
            ),
        ),
        backend="model",
    ),
    BrickSpec(
        "BBOX",
        "predict",
        "The bounding-box mask of a mask",
        (Port("mask", M),),
        (Port("mask", M),),
        "None",
    ),
]

EDIT = [
    BrickSpec(
        "FASTINPAINT",
        "edit",
        "Quick classical inpainting; also scores how hard the fill is",
        (Port("image", I), Port("mask", M)),
        (Port("image", I), Port("score", F, range=(0.0, 1.0))),
        "The fill is rough: use it as the pre-inpainted image of INPAINT, or alone when speed matters. "
        "The score (0 easy, 1 hard) is INPAINT's strength.",
    ),
    BrickSpec(
        "FILL",
        "edit",
        "Generate what the prompt describes inside the mask; not for recolouring",
        (Port("image", I), Port("mask", M), Port("prompt", S), Port("preimage", I)),
        (Port("image", I),),
        "If the mask comes from CMI-PRED the image must be CMI-PRED's image too. preimage is optional: the "
        "original image when expanding, a reference object, or null.",
        modes=(Mode(("image", "mask", "prompt"), ("image",), ("preimage",)),),
        aliases=("FLUX-FILL",),
        backend="model",
    ),
    BrickSpec(
        "RCM",
        "edit",
        "Replace the colour or material of the object in the mask",
        (Port("image", I), Port("mask", M), Port("prompt", S)),
        (Port("image", I),),
        "The prompt names the new colour or material.",
        aliases=("FLUX-RCM",),
        backend="model",
    ),
    BrickSpec(
        "INPAINT",
        "edit",
        "Fill the masked area with background, guided by a pre-inpainted image and its score",
        (Port("image", I), Port("mask", M), Port("preimage", I), Port("score", F, range=(0.0, 1.0))),
        (Port("image", I),),
        "Only for removal; takes no prompt. preimage and score come from FASTINPAINT.",
        aliases=("FLUX-INPAINT",),
        backend="model",
    ),
    BrickSpec(
        "CBG",
        "edit",
        "Change the background (the masked area) to a new scene",
        (Port("image", I), Port("mask", M), Port("prompt", S)),
        (Port("image", I),),
        "The prompt is 'change the background to X'. The mask is the background: segment the subject (RES for "
        "a named one, else SOS) and INVERSE it.",
        aliases=("FLUX-CBG",),
        backend="model",
    ),
    BrickSpec(
        "STYLE",
        "edit",
        "Restyle the image, or the masked part of it, in the given style",
        (Port("image", I), Port("mask", M), Port("prompt", S), Port("style", S)),
        (Port("image", I),),
        "The prompt is a CMI-PRED caption. mask null restyles the whole image.",
        modes=(Mode(("image", "prompt", "style"), ("image",), ("mask",)),),
        aliases=("FLUX-STYLE",),
        backend="model",
    ),
    BrickSpec(
        "COMPOSE",
        "edit",
        "Put mask2 over mask1, or image2 over image1 (the second covers the first)",
        (Port("mask1", M), Port("mask2", M), Port("image1", I), Port("image2", I)),
        (Port("mask", M), Port("image", I)),
        "Give either masks or images, never both. Masks give only a mask, images only an image.",
        modes=(Mode(("mask1", "mask2"), ("mask",), (), "masks"), Mode(("image1", "image2"), ("image",), (), "images")),
    ),
    BrickSpec(
        "RESIZE",
        "edit",
        "Scale the object of a mask or image by the ratio (bottom-aligned, centred)",
        (Port("mask", M), Port("image", I), Port("ratio", F, range=RESIZE_RANGE)),
        (Port("mask", M), Port("image", I)),
        "Give a mask or an image, not both; it returns the same kind. A cut-out image scales its object; a plain "
        "image zooms about its centre.",
        modes=(Mode(("mask", "ratio"), ("mask",), (), "mask"), Mode(("image", "ratio"), ("image",), (), "image")),
    ),
    BrickSpec(
        "ENV",
        "edit",
        "Change the environment: weather, season or time of day",
        (Port("image", I), Port("prompt", S)),
        (Port("image", I),),
        "Use no PREDICT brick before it; the prompt says the new environment, e.g. 'make it night'.",
        aliases=("FLUX-ENV",),
        backend="model",
    ),
    BrickSpec(
        "POSE",
        "edit",
        "Change the pose or orientation of an object",
        (Port("image", I), Port("prompt", S)),
        (Port("image", I),),
        "The prompt describes the object and its new pose; use no PREDICT brick before it.",
        aliases=("FLUX-POSE",),
        backend="model",
    ),
]

LATER = [
    # The published README's example of a brick added after training (the "new tool" experiment).
    BrickSpec(
        "BRIGHTNESS",
        "edit",
        "Change the brightness of the image by the ratio",
        (Port("image", I), Port("ratio", F, range=(0.0, 1.0))),
        (Port("image", I),),
        "ratio 0 is black, 0.5 leaves the image unchanged, above 0.5 brightens.",
        aliases=("FLUX-BRIGHT",),
        tags=("added-later",),
    ),
]

FUNCTION_IMPLEMENTATIONS = {
    "INVERSE": functions.inverse,
    "BBOX": functions.bbox,
    "FASTINPAINT": functions.fastinpaint,
    "COMPOSE": functions.compose,
    "RESIZE": functions.resize,
    "BRIGHTNESS": functions.brightness,
}


def register_builtin_bricks(registry: BrickRegistry, include_later: bool = True) -> None:
    for spec in PREDICT + EDIT + (LATER if include_later else []):
        registry.register(spec, FUNCTION_IMPLEMENTATIONS.get(spec.name), source="lego_edit (built-in)")


MODEL_BRICKS = tuple(s.name for s in PREDICT + EDIT if s.backend == "model")
