"""Token ids and names shared by the model, the data layer and the checkpoint tools."""

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200

IMAGE_TOKEN = "<image>"
IMAGE_PATCH_TOKEN = "<im_patch>"
IM_START_TOKEN = "<im_start>"
IM_END_TOKEN = "<im_end>"
SEG_TOKEN = "[SEG]"

# CLIP (openai/clip-vit-large-patch14) normalisation, as CLIPImageProcessor applies it.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# SAM normalisation on the 0..255 scale.
SAM_MEAN = (123.675, 116.28, 103.53)
SAM_STD = (58.395, 57.12, 57.375)
