"""Mask overlays that show on any picture: the outline differs clearly from what lies under it,
even for a mask on an object of the mask's own colour; colours follow the [SEG] order."""

import cv2
import numpy as np
import pytest
from PIL import Image

from lisa.inference.visualize import (
    PALETTE,
    band_width,
    enlarge,
    mask_colour,
    overlay_all,
    overlay_masks,
    picture,
    save_masks,
)

H, W = 120, 160


def _scene(colour, background=(235, 235, 235)):
    """A picture with a disc of ``colour`` and the disc's exact mask."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:] = background
    cv2.circle(img, (80, 60), 35, tuple(int(c) for c in colour), -1)
    mask = np.all(img == np.asarray(colour, np.uint8), axis=-1)
    return img, mask


def _border(mask):
    kernel = np.ones((3, 3), np.uint8)
    return mask & ~cv2.erode(mask.astype(np.uint8), kernel).astype(bool)


@pytest.mark.parametrize("colour", [PALETTE[0], (230, 40, 40), (255, 255, 255), (0, 0, 0), (245, 195, 40),
                                    (128, 128, 128)])
def test_the_outline_shows_on_an_object_of_any_colour(colour):
    img, mask = _scene(colour)
    out = overlay_masks(img, [mask])
    diff = np.abs(out.astype(int) - img.astype(int)).max(-1)
    t = band_width(H, W)
    # along the whole border, within the two outline bands, some pixel differs by at least half the range
    near = cv2.dilate((diff >= 128).astype(np.uint8), np.ones((4 * t + 1, 4 * t + 1), np.uint8)).astype(bool)
    border = _border(mask)
    assert near[border].all(), f"outline invisible at {int((~near[border]).sum())} border pixels"
    # the mask's own border pixels are dark, unless the object is dark itself (then the light band shows)
    assert (diff[border] >= 100).all() or max(colour) < 100
    assert not (out != img).any(-1)[~mask].any()  # nothing outside the mask changes


def test_red_mask_on_a_red_circle_is_visible():
    """The case the issue reports: before, the translucent red fill left the red circle unchanged."""
    img, mask = _scene(PALETTE[0])
    out = overlay_masks(img, [mask])
    diff = np.abs(out.astype(int) - img.astype(int)).max(-1)
    assert (diff[_border(mask)] >= 200).all()
    assert (diff[mask] >= 128).sum() >= _border(mask).sum()


def test_fill_colours_follow_the_seg_order():
    img = np.full((H, W, 3), 128, np.uint8)
    masks = [np.zeros((H, W), bool) for _ in range(3)]
    masks[0][10:50, 10:50] = masks[1][10:50, 70:110] = masks[2][60:110, 30:130] = True
    out = overlay_masks(img, masks, first=0)
    for i, m in enumerate(masks):
        centre = tuple(int(v) for v in np.argwhere(m).mean(0))
        got = out[centre].astype(int) - 128
        want = np.asarray(mask_colour(i)) - 128
        assert np.dot(got, want) > 0.5 * np.linalg.norm(got) * np.linalg.norm(want), (i, got, want)
    # a mask saved alone keeps the colour of its [SEG]
    alone = overlay_masks(img, [masks[2]], first=2)
    centre = tuple(int(v) for v in np.argwhere(masks[2]).mean(0))
    assert tuple(alone[centre]) == tuple(out[centre])
    np.testing.assert_array_equal(overlay_all(img, []), img)


def test_small_pictures_are_enlarged_with_sharp_edges_and_shown_beside_the_original():
    img, mask = _scene(PALETTE[2])
    big, factor = enlarge(img, 384)
    assert factor == 4 and big.shape == (H * 4, W * 4, 3)
    np.testing.assert_array_equal(big[::4, ::4], img)  # nearest neighbour: no new colours
    assert len(np.unique(big.reshape(-1, 3), axis=0)) == len(np.unique(img.reshape(-1, 3), axis=0))
    pic = picture(img, [mask], min_side=384)
    assert pic.shape[0] == H * 4 and pic.shape[1] > 2 * W * 4
    np.testing.assert_array_equal(pic[:, : W * 4], big)  # the original on the left
    np.testing.assert_array_equal(pic[:, -W * 4:], overlay_masks(img, [mask], min_side=384))
    # a wide picture has no room for two: the overlay alone
    wide = np.zeros((400, 1500, 3), np.uint8)
    assert picture(wide, [np.ones((400, 1500), bool)]).shape == wide.shape
    with pytest.raises(ValueError, match="mask 0 has shape"):
        overlay_masks(img, [mask[:10]])


def test_saved_overlays_show_the_mask(tmp_path):
    img, mask = _scene(PALETTE[1])
    files = save_masks(img, [mask, mask], tmp_path, "x")
    assert [f.rsplit("/", 1)[-1] for f in files] == ["x_mask_0.jpg", "x_masked_img_0.jpg", "x_mask_1.jpg",
                                                     "x_masked_img_1.jpg"]
    shown = np.asarray(Image.open(files[1])).astype(int)
    assert np.abs(shown - img).max(-1)[_border(mask)].mean() > 100  # visible through JPEG as well
