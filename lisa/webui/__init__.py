"""``lisa app``: a gradio page to try a model: upload an image, type an instruction, get the answer,
every mask overlaid in its own colour and the masks as PNG files; later questions about the same
image continue the conversation and reuse its encoding."""
