"""Training data for the loop: the data layer's mixture and collation, positioned by (epoch, step).

Every item is drawn from its own generator keyed by (seed, rank, epoch, index), so the sample at a
given place of the run is a pure function of that place: resuming at optimizer step ``s`` of an
epoch starts the loader at index ``s * grad_accumulation_steps * batch_size`` and sees exactly the
samples an uninterrupted run would have seen. The loader uses its own ``torch.Generator`` so
creating it does not draw from the global RNG (that would shift dropout after a resume).
"""

from __future__ import annotations

import functools

import torch

from ..data import build_train_dataset, worker_init_fn
from ..data.collate import collate


def make_collate(args, tokenizer, model_config):
    return functools.partial(collate, tokenizer=tokenizer, conv_type=args.conv_type,
                             use_mm_start_end=model_config.mm_use_im_start_end,
                             model_max_length=args.model_max_length,
                             num_image_tokens=model_config.num_image_tokens)


def samples_per_epoch(args) -> int:
    return args.steps_per_epoch * args.grad_accumulation_steps * args.batch_size


def build_dataset(args, model_config, rank: int, world_size: int = 1):
    """The mixture of draws (LISA), or with ``--epoch_over_data`` passes over the records (LLaVA);
    images prepared for the model's vision tower (``--image_aspect_ratio``)."""
    from ..data.passes import DataPassDataset
    from ..preprocess import VisionInput

    sam_size = model_config.sam_image_size if model_config.has_seg_head else 32
    base = model_config.vision_input
    vision = VisionInput(base.size, base.kind, pad=getattr(args, "image_aspect_ratio", "square") == "pad")
    mixture = build_train_dataset(args, clip_size=model_config.clip_image_size, sam_size=sam_size, rank=rank,
                                  samples_per_epoch=max(samples_per_epoch(args), 1), vision=vision)
    if not getattr(args, "epoch_over_data", False):
        return mixture
    return DataPassDataset(mixture.families, batch_size=args.batch_size, world_size=world_size, rank=rank,
                           seed=args.seed, group_by_length=args.group_by_modality_length,
                           steps_per_epoch=args.steps_per_epoch,
                           grad_accumulation_steps=args.grad_accumulation_steps)


class _Range(torch.utils.data.Sampler):
    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def epoch_loader(dataset, collate_fn, args, epoch: int, start_step: int):
    dataset.set_epoch(epoch)
    start = start_step * args.grad_accumulation_steps * args.batch_size
    return torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, sampler=_Range(start, len(dataset)), collate_fn=collate_fn,
        num_workers=args.workers, worker_init_fn=worker_init_fn if args.workers > 0 else None,
        generator=torch.Generator().manual_seed(args.seed + epoch), drop_last=False,
        persistent_workers=False, pin_memory=False)
