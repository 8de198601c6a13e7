"""Instruction phrasings. The GT split and the open-domain split use disjoint templates and connectives,
so the open-domain split tests (and stage-3 RL trains on) wordings the Builder never saw with a GT.

Placeholders: {e} a referring expression ("the red circle"), {c} a colour, {p} a pattern, {cp} "red"/
"striped"/"red striped", {o} an object phrase ("a small red circle"), {at} a place phrase, {bg} a background
phrase, {s} a style name and {sn} its noun phrase, {env} an environment clause, {r} a resize phrase,
{d} a direction, {side} an outpaint side.
"""

from __future__ import annotations

GT = {
    "remove": ["remove {e}", "delete {e}", "erase {e}", "get rid of {e}", "take {e} out"],
    "recolour": ["make {e} {cp}", "change {e} to {cp}", "paint {e} {cp}", "recolor {e} {cp}"],
    "add": ["add {o} {at}", "put {o} {at}", "place {o} {at}", "draw {o} {at}"],
    "replace": ["replace {e} with {o}", "swap {e} for {o}", "turn {e} into {o}"],
    "background": ["change the background to {bg}", "make the background {bg}", "set the background to {bg}"],
    "style": [
        "turn the picture into {sn}",
        "make it look like {sn}",
        "apply the {s} style",
        "render the image in {s} style",
    ],
    "environment": ["{env}"],
    "extract": ["extract {e}", "cut out {e}", "segment {e}", "isolate {e}"],
    "resize": ["make {e} {r}", "resize {e} to be {r}", "scale {e} to be {r}"],
    "pose": ["make {e} point {d}", "rotate {e} to point {d}", "turn {e} so it points {d}"],
    "outpaint": ["expand the image {side}", "extend the picture {side}", "outpaint the image {side}"],
}
GT_ENV = {
    "night": ["make it night", "change the time to night"],
    "fog": ["add fog", "make it foggy"],
    "sunset": ["make it sunset", "change the time to sunset"],
    "snow": ["make it snow", "add snow"],
}
GT_CONNECTIVES = ["{a} and {b}", "{a}, then {b}", "first {a}, then {b}"]
GT_CONNECTIVES_3 = ["{a}, {b} and {c}", "first {a}, then {b}, then {c}"]

OPEN = {
    "remove": ["{E} has to go", "could you wipe away {e}?", "I don't want {e} in the picture", "make {e} vanish"],
    "recolour": ["{E} should be {cp}", "can you colour {e} {cp}?", "I'd like {e} in {cp}", "tint {e} {cp}"],
    "add": ["I want {o} {at}", "could you insert {o} {at}?", "{at_cap} there should be {o}"],
    "replace": ["{E} should become {o}", "exchange {e} for {o}", "I'd rather have {o} instead of {e}"],
    "background": ["the backdrop should be {bg}", "give the scene a {bg} backdrop", "I'd like a {bg} backdrop"],
    "style": ["give the picture a {s} look", "I want this drawn as {sn}", "could it look like {sn}?"],
    "environment": ["{env}"],
    "extract": ["I only want {e}, nothing else", "pull out {e} for me", "keep just {e}"],
    "resize": ["{E} should be {r}", "could you make {e} {r}?", "I'd like {e} {r}"],
    "pose": ["{E} should face {d}", "have {e} pointing {d}", "can {e} point {d}?"],
    "outpaint": ["show more of the scene {side}", "widen the view {side}", "give me more room {side}"],
}
OPEN_ENV = {
    "night": ["switch to a night scene", "it should be dark, like at night"],
    "fog": ["cover the scene in mist", "it should be misty"],
    "sunset": ["bathe it in evening light at dusk"],
    "snow": ["let it be a snowy day", "I want snowfall"],
}
OPEN_CONNECTIVES = ["{a}. After that, {b}", "{b}, but before that {a}", "{a}; also {b}", "{a} plus {b}"]
OPEN_CONNECTIVES_3 = ["{a}. After that, {b}. Finally, {c}", "{a}; next {b}; last {c}"]

AT = {
    "top left": "in the top left corner",
    "top": "at the top",
    "top right": "in the top right corner",
    "left": "on the left",
    "center": "in the middle",
    "right": "on the right",
    "bottom left": "in the bottom left corner",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right corner",
}
RESIZE_WORDS = {2.0: "twice as big", 1.5: "bigger", 0.75: "smaller", 0.5: "half the size"}
OUTPAINT_SIDES = {
    "left": (1.5, 1, 1, 1),
    "right": (1, 1.5, 1, 1),
    "top": (1, 1, 1.5, 1),
    "bottom": (1, 1, 1, 1.5),
    "all": (1.5, 1.5, 1.5, 1.5),
}
OUTPAINT_PHRASE = {
    "left": "to the left",
    "right": "to the right",
    "top": "upwards",
    "bottom": "downwards",
    "all": "on every side",
}
DIRECTIONS = {"up": "up", "down": "down", "left": "left", "right": "right"}
STYLE_WORDS = {"sketch": "a sketch", "pixel art": "pixel art", "pop art": "pop art", "watercolor": "a watercolor"}
