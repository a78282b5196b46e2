"""Request and response bodies of the HTTP API (they also make the OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SegmentJSON(BaseModel):
    """``POST /v1/segment`` as ``application/json``."""

    model_config = ConfigDict(extra="forbid")
    image: str = Field(description="the image file (PNG, JPEG, ...) as base64, optionally as a data: URL")
    prompt: str = Field(description="the instruction, any Unicode text")
    max_new_tokens: int | None = Field(None, description="per-request cap on generated tokens (at most the server's)")
    model: str | None = Field(None, description="a name from GET /v1/models (default: the first model)")


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class ChatJSON(BaseModel):
    """``POST /v1/chat`` as ``application/json``: the whole conversation about one image."""

    model_config = ConfigDict(extra="forbid")
    image: str = Field(description="the image as base64 (the same image for every turn)")
    messages: list[Message] = Field(description="user, assistant, user, ... ending with the user turn to answer")
    max_new_tokens: int | None = None
    model: str | None = Field(None, description="a name from GET /v1/models (default: the first model)")


class MaskRLE(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed RLE counts (pycocotools.mask.decode reads it)")


class MaskOut(BaseModel):
    area: int = Field(description="number of mask pixels")
    bbox: list[int] = Field(description="[x, y, width, height] of the mask pixels; zeros when empty")
    rle: MaskRLE | None = Field(None, description="with mask_format=rle")
    png: str | None = Field(None, description="with mask_format=png: a base64 PNG, non-zero = mask")


class Timings(BaseModel):
    """Seconds, except ``tokens``. ``vision_tower``/``sam_encoder`` are 0 when the image encoding was cached."""

    model_config = ConfigDict(extra="allow")
    queue_wait: float
    image_decode: float
    vision_tower: float
    sam_encoder: float
    prefill: float
    decode: float
    tokens: int
    mask_decode: float
    model: float
    encode_masks: float
    total: float


class BatchInfo(BaseModel):
    size: int = Field(description="requests taken from the queue in the same worker turn")
    index: int = Field(description="position of this request in that turn")


class SegmentResponse(BaseModel):
    request_id: str
    text: str = Field(description="the model's answer")
    masks: list[MaskOut] = Field(description="one mask per [SEG] token, in answer order, at most max_masks")
    mask_format: Literal["rle", "png"]
    masks_dropped: int = Field(0, description="[SEG] tokens of the answer beyond max_masks, which got no mask")
    image_size: list[int] = Field(description="[height, width] of the input image (and of every mask)")
    cache_hit: bool = Field(description="the image encoding (CLIP features, SAM embedding) came from the cache")
    timings: Timings
    batch: BatchInfo
    model: str = Field("", description="the model that answered")
    replica: str = Field("", description="the Ray Serve replica that answered (empty in one process)")
    finish_reason: Literal["stop", "length"] = Field("stop", description="length: max_new_tokens ran out")


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    queue_depth: int = Field(description="summed over the models (Ray Serve replicas report theirs in models)")
    max_queue: int
    served: int
    failed: int
    models: dict[str, dict] = Field(default_factory=dict, description="each model's own status and counters")


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: str
    llm: dict
    has_seg_head: bool
    clip_image_size: int
    sam_image_size: int
    dtype: str
    device: str
    quantization: str | None
    conv_type: str
    max_new_tokens: int
    limits: dict
    batching: dict
    cache: dict
