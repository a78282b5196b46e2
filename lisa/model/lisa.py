"""``LisaForSegmentation``: one composition of a causal LM, CLIP, a projector, SAM and the [SEG] head.

Module names map 1:1 onto the released checkpoint keys (see ``lisa.checkpoint.layout``):
``llm.*`` -> LLaMA keys, ``mm_projector`` -> ``model.mm_projector``, ``sam`` -> ``model.visual_model``
(official SAM names), ``text_hidden_fcs`` -> ``model.text_hidden_fcs``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from ..constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from ..preprocess import postprocess_masks
from .config import LisaConfig
from .losses import bce_loss_sum, dice_loss_sum
from .sam import SamPrompter, build_sam
from .splice import seg_hidden_positions, splice_image_features
from .vision import VisionTower, build_projector


def llm_config_from_dict(data: dict):
    data = dict(data)
    model_type = data.pop("model_type", "llama")
    return AutoConfig.for_model(model_type, **data)


def build_seg_head(hidden: int, out_dim: int) -> nn.ModuleList:
    return nn.ModuleList([nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, out_dim), nn.Dropout(0.0))])


class LisaForSegmentation(nn.Module):
    def __init__(self, config: LisaConfig, llm: nn.Module | None = None, seg_token_id: int | None = None):
        super().__init__()
        self.config = config
        self.llm = llm if llm is not None else AutoModelForCausalLM.from_config(llm_config_from_dict(config.llm))
        if config.vision is None:
            raise ValueError("LisaConfig.vision is not set: the CLIP vision tower config is unknown")
        self.vision_tower = VisionTower(config.vision, config.select_layer, config.select_feature)
        self.mm_projector = build_projector(config.projector_type, config.mm_hidden_size, config.hidden_size)
        if config.has_seg_head:
            if config.sam is None:
                raise ValueError("LisaConfig.sam is not set for a model with a [SEG] head")
            self.sam = build_sam(config.sam)
            self.text_hidden_fcs = build_seg_head(config.hidden_size, config.out_dim)
            self.prompter = SamPrompter(self.sam)
        self.seg_token_id = seg_token_id

    # ---- pieces ---------------------------------------------------------------------------------
    @property
    def decoder(self) -> nn.Module:
        return self.llm.get_decoder()

    @property
    def lm_head(self) -> nn.Module:
        return self.llm.get_output_embeddings()

    def encode_clip(self, images_clip: torch.Tensor) -> torch.Tensor:
        """[B, 3, c, c] -> projected patch features [B, P, H]."""
        feats = self.vision_tower(images_clip)
        proj_dtype = next(self.mm_projector.parameters()).dtype
        return self.mm_projector(feats.to(proj_dtype))

    def encode_sam(self, images: torch.Tensor) -> torch.Tensor:
        dtype = self.sam.vision_encoder.patch_embed.projection.weight.dtype
        return self.prompter.encode_image(images.to(dtype))

    def seg_embeddings(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states [k, H] at [SEG]-predicting positions -> SAM prompt vectors [k, out_dim]."""
        head = self.text_hidden_fcs[0]
        return head(hidden.to(head[0].weight.dtype))

    def decode_masks(self, image_embedding: torch.Tensor, seg_embeds: torch.Tensor, resize: tuple[int, int],
                     original_size: tuple[int, int]) -> torch.Tensor:
        low_res = self.prompter.decode(image_embedding, seg_embeds)
        return postprocess_masks(low_res, resize, original_size, self.config.sam_image_size)

    def iter_bool_masks(self, image_embedding: torch.Tensor, seg_embeds: torch.Tensor, resize: tuple[int, int],
                        original_size: tuple[int, int]):
        """Boolean masks [H, W] at the original size, one per prompt in order. Each is thresholded as
        soon as it is upsampled, so only one float mask of the full size exists at a time (the same
        values as ``decode_masks(...) > 0``)."""
        low_res = self.prompter.decode(image_embedding, seg_embeds)
        for k in range(low_res.shape[0]):
            yield postprocess_masks(low_res[k:k + 1], resize, original_size, self.config.sam_image_size)[0] > 0

    def image_features_for_rows(self, input_ids: torch.Tensor, clip_feats: torch.Tensor,
                                row_image: torch.Tensor) -> list[torch.Tensor]:
        """Features for every image token, in row-major order: a row's tokens use the row's image."""
        counts = (input_ids == IMAGE_TOKEN_INDEX).sum(1).tolist()
        feats = []
        for n, c in enumerate(counts):
            feats += [clip_feats[int(row_image[n])]] * c
        return feats

    def run_llm(self, input_ids, clip_feats, row_image, attention_mask=None, labels=None, need_logits=True):
        spliced = splice_image_features(input_ids, self.llm.get_input_embeddings(),
                                        self.image_features_for_rows(input_ids, clip_feats, row_image),
                                        attention_mask, labels)
        out = self.decoder(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask,
                           use_cache=False)
        hidden = out.last_hidden_state
        logits = self.lm_head(hidden) if need_logits else None
        return spliced, hidden, logits

    # An image without [SEG] is not SAM-encoded: its embedding only meets the zero prompt whose
    # masks count times 0, so the loss and every gradient are the same bit for bit (tested), and the
    # encoder (a third of a CPU training step) runs on fewer images. One call per forward remains.
    skip_unprompted_images = True

    def _sam_embeddings(self, images: torch.Tensor, counts: list[int]) -> torch.Tensor:
        needed = [b for b, c in enumerate(counts) if c > 0]
        if not self.skip_unprompted_images or len(needed) == images.shape[0]:
            return self.encode_sam(images)
        encoded = self.encode_sam(images[needed or [0]])
        rows = dict(zip(needed or [0], encoded.unbind(0)))
        zero = encoded.new_zeros(encoded.shape[1:])
        return torch.stack([rows.get(b, zero) for b in range(images.shape[0])])

    # ---- training / teacher-forced evaluation ----------------------------------------------------
    def forward(self, images_clip: torch.Tensor, input_ids: torch.Tensor, offset: torch.Tensor | None = None,
                images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, masks_list: list[torch.Tensor] | None = None,
                label_list: list[torch.Tensor] | None = None, resize_list=None, inference: bool = False,
                attention_masks: torch.Tensor | None = None) -> dict:
        """The training (or teacher-forced validation) forward over a collated ``Batch``:
        ``model(**batch)``. ``attention_masks`` is the original's name for ``attention_mask``."""
        if attention_mask is None:
            attention_mask = attention_masks
        n_images = images_clip.shape[0]
        if offset is None:
            offset = torch.arange(n_images + 1)
        offset = torch.as_tensor(offset).to("cpu")
        row_image = torch.repeat_interleave(torch.arange(n_images), offset.diff())
        if row_image.numel() != input_ids.shape[0]:
            raise ValueError(f"offset {offset.tolist()} describes {row_image.numel()} conversations "
                             f"but input_ids has {input_ids.shape[0]} rows")
        clip_feats = self.encode_clip(images_clip)
        spliced, hidden, _ = self.run_llm(input_ids, clip_feats, row_image, attention_mask,
                                          labels if not inference else None, need_logits=False)
        result: dict = {}
        if not inference and labels is not None:
            # logits only where a label is (the answers): the loss is the same as over every position
            shift_labels = spliced.labels[:, 1:]
            labelled = shift_labels != IGNORE_INDEX
            logits = self.lm_head(hidden[:, :-1][labelled]).float()
            result["ce_loss"] = F.cross_entropy(logits, shift_labels[labelled]) * self.config.ce_loss_weight
        if not self.config.has_seg_head:
            result["loss"] = result.get("ce_loss")
            return result

        if self.seg_token_id is None:
            raise ValueError("seg_token_id is not set on the model")
        positions = seg_hidden_positions(input_ids, spliced.span_end, self.seg_token_id)
        per_row = [hidden[n, pos] for n, pos in enumerate(positions)]
        # Every image's [SEG] states go through the [SEG] head and SAM's mask decoder in one call each.
        # In training an image without [SEG] (VQA, text-only answers) adds one zero prompt whose masks
        # count times 0: the calls and the parameters that get gradients are then the same whatever
        # the data (ZeRO-3 gathers parameters per module call and reduces gradients per parameter, in
        # step across processes).
        counts = [sum(per_row[n].shape[0] for n in range(int(offset[b]), int(offset[b + 1])))
                  for b in range(n_images)]
        sam_embeddings = self._sam_embeddings(images, counts)
        anchors = [] if inference else [b for b in range(n_images) if counts[b] == 0]
        rows = per_row + [hidden.new_zeros((len(anchors), hidden.shape[-1]))]
        image_index = torch.cat([torch.repeat_interleave(torch.arange(n_images), torch.tensor(counts)),
                                 torch.tensor(anchors, dtype=torch.long)])
        n_seg = sum(counts)
        low_res = [None] * n_images
        unused = hidden.new_zeros(())
        if image_index.numel():
            decoded = self.prompter.decode_many(sam_embeddings, self.seg_embeddings(torch.cat(rows, 0)), image_index)
            low_res = decoded[:n_seg].split(counts)
            unused = decoded[n_seg:].float().sum() * 0.0
        pred_masks = []
        for b in range(n_images):
            size = tuple(label_list[b].shape[-2:]) if label_list is not None else tuple(masks_list[b].shape[-2:])
            if counts[b] == 0:
                pred_masks.append(hidden.new_zeros((0, *size)))
            else:
                pred_masks.append(postprocess_masks(low_res[b], tuple(resize_list[b]), size,
                                                    self.config.sam_image_size))
        if inference:
            return {"pred_masks": pred_masks, "gt_masks": masks_list, "seg_counts": counts}

        bce_sum = dice_sum = pred_masks[0].new_zeros(())
        num_masks = 0
        for b, (pred, gt) in enumerate(zip(pred_masks, masks_list)):
            if gt.shape[0] != pred.shape[0]:
                raise ValueError(f"image {b}: {gt.shape[0]} ground-truth masks but {pred.shape[0]} [SEG] tokens "
                                 "in its conversations")
            if gt.shape[0] == 0:
                continue
            gt = gt.to(pred.device)
            bce_sum = bce_sum + bce_loss_sum(pred, gt)
            dice_sum = dice_sum + dice_loss_sum(pred, gt)
            num_masks += gt.shape[0]
        mask_bce = self.config.bce_loss_weight * bce_sum / (num_masks + 1e-8)
        mask_dice = self.config.dice_loss_weight * dice_sum / (num_masks + 1e-8)
        ce = result.get("ce_loss", mask_bce.new_zeros(()))
        result.update(mask_bce_loss=mask_bce, mask_dice_loss=mask_dice, mask_loss=mask_bce + mask_dice,
                      loss=ce + mask_bce + mask_dice + unused, num_masks=num_masks)
        return result
