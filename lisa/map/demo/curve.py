"""The demo's learning curve as a PNG (PIL only): held-out mAP against training seconds, with the
untrained model and the average-map baseline as horizontal references."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

W, H, PAD = 640, 400, 56


def draw_curve(points: list[tuple[float, float]], path, *, untrained: float, baseline: float,
               target: float = 0.30, title: str = "held-out mAP (Chamfer AP, mean of 0.5 / 1.0 / 1.5 m)") -> Path:
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    t_max = max([p[0] for p in points] + [1.0])
    y_max = max([p[1] for p in points] + [untrained, baseline, target, 0.1]) * 1.1

    def xy(t: float, v: float) -> tuple[float, float]:
        return PAD + (W - 2 * PAD) * t / t_max, H - PAD - (H - 2 * PAD) * v / y_max

    d.rectangle([PAD, PAD, W - PAD, H - PAD], outline=(120, 120, 120))
    for k in range(6):
        v = y_max * k / 5
        _, y = xy(0, v)
        d.line([PAD - 4, y, PAD, y], fill=(120, 120, 120))
        d.text((6, y - 6), f"{v:.2f}", fill=(0, 0, 0))
    for k in range(6):
        t = t_max * k / 5
        x, _ = xy(t, 0)
        d.line([x, H - PAD, x, H - PAD + 4], fill=(120, 120, 120))
        d.text((x - 12, H - PAD + 8), f"{t:.0f} s", fill=(0, 0, 0))
    for value, colour, label in ((untrained, (200, 60, 60), "untrained"), (baseline, (120, 120, 120), "average map"),
                                 (target, (60, 160, 60), "target")):
        _, y = xy(0, value)
        d.line([PAD, y, W - PAD, y], fill=colour, width=1)
        d.text((W - PAD - 90, y - 14), f"{label} {value:.3f}", fill=colour)
    if points:
        line = [xy(t, v) for t, v in points]
        if len(line) > 1:
            d.line(line, fill=(30, 80, 200), width=2)
        for x, y in line:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(30, 80, 200))
    d.text((PAD, 18), title, fill=(0, 0, 0))
    d.text((W // 2 - 40, H - 20), "training time", fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
