"""models/vision/device_resize.py: the CPU path's scale + orient + resize, as batched matrix maps.

The CPU path is the reference: simplejpeg's DCT-scaled decode, ``apply_orientation`` and
PIL's bilinear resample. Run on the CPU here; on a GPU host the same functions run on CUDA
tensors (test_device_input.py compares the two devices).
"""

from __future__ import annotations

import io
import math

import numpy as np
import numpy.typing as npt
import pytest
import simplejpeg
import torch
from PIL import Image

from models.vision import device_resize
from models.vision.device_resize import dct_scale, orient, resize_crop
from models.vision.images import apply_orientation, crop_box, load_image
from models.vision.modelcard import ModelCard
from tests.photos import sample_arrays
from tests.unit.test_device_input import make_card
from tests.unit.test_images import LIMITS

RGB = npt.NDArray[np.uint8]


def chw(rgb: RGB) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)  # a writable copy


def pil_resized(rgb: RGB, card: ModelCard) -> RGB:
    h, w = rgb.shape[:2]
    size = (card.input_size, card.input_size)
    box = crop_box(w, h, card)
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, box=box))


def photo(name: str, longest: int | None = None) -> RGB:
    rgb = sample_arrays()[name]
    if longest is None:
        return rgb
    im = Image.fromarray(rgb)
    scale = longest / max(im.size)
    size = (round(im.width * scale), round(im.height * scale))
    return np.asarray(im.resize(size, Image.Resampling.LANCZOS))


def jpeg(rgb: RGB) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def cpu_pixels(data: bytes, card: ModelCard) -> npt.NDArray[np.float32]:
    """The CPU path's 8-bit pixels before normalisation (load_image, un-normalised)."""
    out = load_image(data, LIMITS, card)
    mean = np.asarray(card.mean, np.float32).reshape(3, 1, 1)
    std = np.asarray(card.std, np.float32).reshape(3, 1, 1)
    return np.asarray(out * std + mean, dtype=np.float32)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_the_cpu_path(orientation: int) -> None:
    rgb = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    ours = orient(chw(rgb), orientation)
    np.testing.assert_array_equal(
        ours.permute(1, 2, 0).numpy(), apply_orientation(rgb, orientation)
    )


@pytest.mark.parametrize("size", [32, 224])
@pytest.mark.parametrize(
    "name", ["chelsea", "coffee", "retina", "astronaut", "clock", "motorcycle_left"]
)
def test_resample_is_pils_bilinear(name: str, size: int) -> None:
    """Up- and downscaling, landscape and square: PIL's own pixels, to the rounding."""
    card = make_card(size)
    rgb = sample_arrays()[name]
    ours = resize_crop([chw(rgb)], card, dct_scaling=False)[0].permute(1, 2, 0).numpy()
    diff = np.abs(ours - pil_resized(rgb, card).astype(np.float32))
    # PIL sums in fixed point, we in float32: a sum landing on .5 may round the other way.
    assert diff.max() <= 1
    assert diff.mean() < 0.01


def test_dct_scale_is_the_one_simplejpeg_picks() -> None:
    sides = [255, 256, 300, 511, 512, 600, 682, 683, 700, 1023, 1024, 1366, 2047, 2048, 3000]
    for height in sides:
        for width in (max(height, 700), height + 1):
            data = jpeg(np.full((height, width, 3), 128, np.uint8))
            decoded = simplejpeg.decode_jpeg(
                data, colorspace="RGB", min_height=256, min_width=256, min_factor=2
            )
            scale = dct_scale(height, width, 256)
            expected = (math.ceil(height * scale), math.ceil(width * scale))
            assert decoded.shape[:2] == expected, (height, width)


@pytest.mark.parametrize(
    ("name", "longest"),
    [
        ("grass", None),  # 512: 1/2
        ("astronaut", 1500),  # 1/4
        ("hubble_deep_field", None),  # 872 x 1000: 3/8
        ("grass", 1000),  # 3/8
        ("coffee", 3000),  # 1/8
        ("retina", None),  # 1411: 1/4
    ],
)
def test_scaled_jpegs_match_the_cpu_paths_decoder(name: str, longest: int | None) -> None:
    """DCT-domain downscaling, emulated on the full-size pixels, within a grey level or so."""
    from torchvision.io import ImageReadMode, decode_jpeg

    card = make_card(224)
    data = jpeg(photo(name, longest))
    full = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
    assert dct_scale(int(full.shape[1]), int(full.shape[2]), card.resize_size) < 1
    ours = resize_crop([full], card)[0].numpy()
    unscaled = resize_crop([full], card, dct_scaling=False)[0].numpy()
    expected = cpu_pixels(data, card)
    diff = np.abs(ours - expected)
    assert diff.mean() < 0.8, diff.mean()
    # Without the emulation the picture differs several times as much (texture especially).
    assert np.abs(unscaled - expected).mean() > 1.5 * diff.mean()


def test_an_image_does_not_depend_on_its_batch() -> None:
    """Shared canvases (mixed sizes and scales, zero padding, several groups): same result."""
    card = make_card(48)
    images = [
        chw(photo(name, longest))
        for name, longest in [
            ("chelsea", None),
            ("coffee", 1000),
            ("retina", None),
            ("clock", None),
            ("rocket", 1500),
            ("coins", None),
        ]
    ]
    images.append(orient(images[0], 6))  # portrait
    orientations = [1, 1, 3, 1, 6, 8, 1]
    alone = torch.cat(
        [resize_crop([image], card, [o]) for image, o in zip(images, orientations, strict=True)]
    )
    together = resize_crop(images, card, orientations)
    budget = 3 * 700 * 700  # several canvases per step
    grouped = resize_crop(images, card, orientations, canvas_elements=budget)
    shapes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
    assert len(device_resize._groups(shapes, budget)) > 2
    torch.testing.assert_close(together, alone, atol=0, rtol=0)
    torch.testing.assert_close(grouped, alone, atol=0, rtol=0)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_orientation_applies_after_the_dct_scaling(orientation: int) -> None:
    """The decoder scales the stored image (its 8 x 8 grid), then the picture is turned."""
    from torchvision.io import ImageReadMode, decode_jpeg

    card = make_card(224)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    # 1100 x 734: neither side a multiple of 8, decoded at 3/8.
    Image.fromarray(photo("rocket", 1100)).save(buf, "JPEG", quality=92, exif=exif.tobytes())
    data = buf.getvalue()
    stored = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
    ours = resize_crop([stored], card, [orientation])[0].numpy()
    assert np.abs(ours - cpu_pixels(data, card)).mean() < 0.8


def test_groups_bound_the_canvas() -> None:
    shapes = [(100, 200), (300, 100), (50, 50), (1000, 1000), (120, 180)]
    groups = device_resize._groups(shapes, 3 * 300 * 300)
    assert sorted(i for g in groups for i in g) == list(range(len(shapes)))
    for group in groups:
        h = max(shapes[i][0] for i in group)
        w = max(shapes[i][1] for i in group)
        assert len(group) == 1 or 3 * h * w * len(group) <= 3 * 300 * 300


def test_block_kernels_keep_flat_areas_flat() -> None:
    for scale in device_resize.DCT_SCALES:
        kernel = device_resize._block_kernel(scale)
        assert kernel.shape == (round(8 * scale), 8)
        torch.testing.assert_close(kernel.sum(1), torch.ones(kernel.shape[0]))
