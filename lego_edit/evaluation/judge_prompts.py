"""The judge prompts: our wording of the published GEdit-Bench (VIEScore SC and PQ) and ImgEdit-Bench (per-type
rubric) prompts, and the retry request sent after an unreadable answer. Kept apart from the judges and the
aggregation in ``judge.py``, which re-exports these names."""

from __future__ import annotations

from .benchmark_items import IMGEDIT_ALIASES, IMGEDIT_TYPES

_ROLE = (
    "You are a meticulous judge of image edits. The images may be AI-generated or AI-edited, and any people "
    "in them are synthetic, so evaluate them freely."
)
_JSON = 'Reply with JSON only, exactly: {{"score": [{slots}], "reasoning": "<at most 25 words>"}}'
SC_PROMPT = (
    _ROLE + "\n\nThe first image is the original. The second is meant to be the original edited by the "
    "instruction below. Give two integers from 0 to 10.\n"
    "1. Editing success: how completely and correctly the second image carries out the instruction "
    "(0 = not at all, 10 = perfectly).\n"
    "2. Over-editing: how well everything the instruction did not ask to change is kept "
    "(0 = the image was changed beyond what was asked, 10 = nothing else changed).\n"
    "If the two images look the same, the edit failed.\n"
    + _JSON.format(slots="<success>, <over-editing>")
    + "\n\nEditing instruction: {instruction}"
)
PQ_PROMPT = (
    _ROLE + "\n\nJudge the single image on its own. Give two integers from 0 to 10.\n"
    "1. Naturalness: does it look like a coherent, plausible picture with consistent lighting, perspective "
    "and proportions (0 = clearly unnatural, 10 = fully natural)?\n"
    "2. Artifacts: is it free of distortion, smearing, blur, noise, broken text, duplicated or malformed "
    "parts (0 = heavy artifacts, 10 = none)?\n" + _JSON.format(slots="<naturalness>, <artifacts>")
)
_RETRY = (
    "Your previous answer could not be read ({reason}). Answer again with JSON only, exactly: "
    '{{"score": [{slots}], "reasoning": "..."}} with {n} numbers from {lo:g} to {hi:g}.'
)

# ImgEdit's per-type rubric: three 1-5 criteria; the 2nd and 3rd may not exceed the 1st.
IMGEDIT_RUBRICS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "add": (
        "an object addition",
        (
            ("Prompt compliance", "the requested object is present with the stated class, place, colour, size, count"),
            ("Visual naturalness", "the added object blends in: no paste marks, matching style, lighting and palette"),
            (
                "Physical & detail coherence",
                "contact, shadows, perspective and occlusion are right; the rest is untouched",
            ),
        ),
    ),
    "adjust": (
        "an attribute change",
        (
            (
                "Prompt compliance",
                "the named attribute (colour, material, texture...) of the named object changed as asked",
            ),
            ("Visual seamlessness", "the change looks native: no halos, blotches or mismatched shading"),
            ("Physical & detail fidelity", "shape, structure and fine detail of the object and scene are kept"),
        ),
    ),
    "extract": (
        "an object extraction",
        (
            ("Object identity", "the edited image shows exactly the requested object, complete, the same instance"),
            ("Mask precision", "clean contour on a pure white background, no remnants, holes or fringes"),
            ("Visual quality", "the object keeps its colours and detail, without blur, warping or noise"),
        ),
    ),
    "replace": (
        "an object replacement",
        (
            ("Prompt compliance", "the named object is gone and the requested one stands in its place"),
            ("Visual naturalness", "the new object fits the scene's style, lighting and resolution"),
            ("Physical & detail integrity", "scale, contact, shadows and perspective are right; the rest is kept"),
        ),
    ),
    "remove": (
        "an object removal",
        (
            ("Prompt compliance", "the named object is completely removed and nothing else"),
            ("Visual naturalness", "the filled area shows no smear, ghost, seam or repeated pattern"),
            (
                "Physical & detail integrity",
                "the revealed background continues plausibly; shadows and reflections of the object are gone too",
            ),
        ),
    ),
    "background": (
        "a background change",
        (
            ("Instruction compliance", "the background became what was asked and the foreground subject is kept"),
            ("Visual seamlessness", "the subject's edges and the new background join cleanly"),
            ("Physical consistency", "lighting, perspective and scale of subject and background agree"),
        ),
    ),
    "style": (
        "a style transfer",
        (
            ("Style fidelity", "the image shows the requested style's palette, strokes and texture throughout"),
            ("Content preservation", "the layout, objects and identities of the original stay recognisable"),
            ("Rendering quality", "the stylised image is clean and coherent, without artefacts"),
        ),
    ),
    "hybrid": (
        "a multi-step edit",
        (
            ("Instruction compliance", "every operation the instruction asks for is done, on the right objects"),
            ("Visual naturalness", "all edited regions blend into the image without seams or mismatches"),
            (
                "Physical consistency & fine detail",
                "lighting, perspective and detail are coherent; nothing else changed",
            ),
        ),
    ),
    "action": (
        "an action or expression change",
        (
            ("Action fidelity", "the subject now performs the requested pose, motion or expression"),
            ("Identity preservation", "the subject's identity, clothing and the scene stay the same"),
            ("Visual & anatomical coherence", "the new pose is anatomically plausible and free of artefacts"),
        ),
    ),
}


def imgedit_prompt(edit_type: str, instruction: str) -> str:
    """The rubric prompt for one ImgEdit sample (our wording of the published per-type rubric)."""
    task = IMGEDIT_ALIASES.get(edit_type, edit_type)
    if task not in IMGEDIT_RUBRICS:
        raise ValueError(f"unknown ImgEdit edit type {edit_type!r}; expected one of {IMGEDIT_TYPES}")
    what, criteria = IMGEDIT_RUBRICS[task]
    lines = [
        _ROLE,
        "",
        f"You grade {what}. The first image is the original, the second the edited result. "
        "Score three criteria from 1 (fails) to 5 (flawless):",
    ]
    lines += [f"{i}. {name}: {desc}." for i, (name, desc) in enumerate(criteria, 1)]
    lines += [
        "Scores 2 and 3 must not be higher than score 1.",
        _JSON.format(slots=", ".join(f"<{name.lower()}>" for name, _ in criteria)),
        "",
        f"Editing instruction: {instruction}",
    ]
    return "\n".join(lines)
