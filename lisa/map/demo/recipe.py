"""The map demo's recipe: the synthetic town, the tiny detector's training, the validations.

Measured on the shared 2-core CPU machine this project is developed on (docs/map-detector.md): 600
steps gave held-out mAP 0.46, 1500 steps (a longer cosine schedule) 0.41, so the default is 800 steps,
a few minutes of training on an idle machine and well inside the 10-minute budget on a busy one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class MapDemoRecipe:
    # the synthetic town (part 1's generator): 9 training and 3 held-out drives of 20 key frames
    scenes: int = 12
    samples_per_scene: int = 20
    val_fraction: float = 0.25
    image_size: tuple[int, int] = (192, 108)  # rendered camera images; the detector sees 64 x 64
    # training (lisa map train's loop on precomputed CLIP features: the tower is frozen)
    steps: int = 800
    batch_size: int = 8
    lr: float = 1e-3  # all three groups: a detector trained from scratch, not a pretrained Q-Former
    warmup_steps: int = 50
    grad_clip: float = 1.0
    noobj_weight: float = 0.1  # lisa map train's --noobj_weight
    evals: int = 8  # validations during training (the learning curve)
    seed: int = 0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["image_size"] = list(self.image_size)
        return data


def default_recipe(seed: int = 0, steps: int | None = None) -> MapDemoRecipe:
    recipe = MapDemoRecipe(seed=seed)
    if steps is not None:
        from dataclasses import replace

        recipe = replace(recipe, steps=int(steps))
    return recipe
