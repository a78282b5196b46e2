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

# ``model_type`` values that LLaVA-family checkpoints write into a flat config.json, and the language
# model each one wraps. transformers knows "llava" as its own nested LlavaConfig, which a flat
# LLaVA / LISA config.json is not.
LLAVA_LLM_TYPES = {
    "llava": "llama", "llava_llama": "llama", "LISA": "llama", "lisa": "llama",
    "llava_mistral": "mistral", "llava_mpt": "mpt", "llava_qwen": "qwen2", "llava_qwen2": "qwen2",
}

# SigLIP normalisation (SiglipImageProcessor): 0..1 pixels to -1..1.
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
