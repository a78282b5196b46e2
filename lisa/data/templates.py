"""Question / answer templates of the original training data (verbatim) and prompt assembly.

Template and answer are drawn independently, per class or sentence, from the generator the caller
passes in. ``{class_name}`` is lower-cased; ``{sent}`` is inserted as it is.
"""

from __future__ import annotations

import numpy as np

from ..constants import IMAGE_TOKEN
from ..conversation import get_template

SHORT_QUESTION_LIST = (
    IMAGE_TOKEN + "\nCan you segment the {class_name} in this image?",
    IMAGE_TOKEN + "\nPlease segment the {class_name} in this image.",
    IMAGE_TOKEN + "\nWhat is {class_name} in this image? Please respond with segmentation mask.",
    IMAGE_TOKEN + "\nWhat is {class_name} in this image? Please output segmentation mask.",
)
LONG_QUESTION_LIST = (
    IMAGE_TOKEN + "\n{sent} Please respond with segmentation mask.",
    IMAGE_TOKEN + "\n{sent} Please output segmentation mask.",
)
EXPLANATORY_QUESTION_LIST = (
    "Please output segmentation mask and explain why.",
    "Please output segmentation mask and explain the reason.",
    "Please output segmentation mask and give some explanation.",
)
ANSWER_LIST = (
    "It is [SEG].",
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "Sure, the segmentation result is [SEG].",
    "[SEG].",
)

# Validation prompts of the original LISA validation: the space after "\n" is the original's.
VAL_SHORT_QUESTION = IMAGE_TOKEN + "\n What is {} in this image? Please output segmentation mask."
VAL_LONG_QUESTION = IMAGE_TOKEN + "\n {} Please output segmentation mask."
VAL_ANSWER = "[SEG]."


def pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def short_question(rng: np.random.Generator, class_name: str) -> str:
    """A SHORT_QUESTION_LIST question about ``class_name``.

    Part names such as "the lid of the trash can" would read "segment the the lid ..." in the
    original (**bug**); the doubled article is collapsed here.
    """
    name = class_name.lower()
    template = pick(rng, SHORT_QUESTION_LIST)
    if name.startswith("the ") and "the {class_name}" in template:
        name = name[len("the "):]
    return template.format(class_name=name)


def long_question(rng: np.random.Generator, sentence: str) -> str:
    return pick(rng, LONG_QUESTION_LIST).format(sent=sentence)


def answer(rng: np.random.Generator) -> str:
    return pick(rng, ANSWER_LIST)


def build_conversation(turns: list[tuple[str, str]], conv_type: str = "llava_v1") -> str:
    """A full training prompt from (user, assistant) turns, e.g.
    ``... USER: <image>\\n... ASSISTANT: It is [SEG].</s>``."""
    conv = get_template(conv_type)
    for user, reply in turns:
        conv.append_user(user)
        conv.append_assistant(reply)
    return conv.get_prompt()
