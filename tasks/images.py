"""Reading any still image as upright 8-bit sRGB, and writing one, for the face modules.

Operators send whatever they have: phone photos with EXIF rotation, PNGs with alpha, greyscale
scans, CMYK print files, 16-bit PNGs and colour-managed (Display P3) photos. A file that cannot
be read raises `FaceError` with a message that says what to send instead.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from tasks.face_types import FaceError

GREY = (128, 128, 128)  # neutral background for transparent pixels and refused tiles


# A portrait needs a few megapixels; more only costs memory (≈ 3 bytes per pixel decoded, and
# copies on the way). Checked from the header, before anything is decoded.
MAX_PIXELS = 100_000_000


def load_portrait(image_path: Path, *, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, list[str]]:
    """Read any still image as upright 8-bit sRGB (H, W, 3), with notes about what was converted."""
    rgb, notes, to_srgb = read_portrait(Path(image_path), max_pixels=max_pixels)
    return apply_icc(rgb, to_srgb), notes


def read_portrait(image_path: Path, *, max_pixels: int = MAX_PIXELS,
                  ) -> tuple[np.ndarray, list[str], ImageCms.ImageCmsTransform | None]:
    """Upright 8-bit RGB pixels, notes, and the sRGB transform still to apply to them (if any).

    Colour management of RGB photos (Display P3 from phones is common) is returned rather than
    applied: `tasks.face.crop_face` applies it to the 512² crop, far cheaper than the whole photo.
    """
    name = image_path.name
    if not image_path.is_file():
        raise FaceError(
            "missing_image", f"{image_path} does not exist or is not a file; check the path."
        )
    notes: list[str] = []
    try:
        with Image.open(image_path) as opened:
            width, height = opened.size  # from the header: nothing is decoded yet
            if width * height > max_pixels:
                raise FaceError(
                    "image_too_large",
                    f"{name} is {width}×{height} = {width * height / 1e6:.0f} megapixels, more than the "
                    f"{max_pixels / 1e6:g} allowed (AVATARFLOW_IMAGE_MAX_PIXELS raises it); a portrait needs "
                    "no more than about 2000 px a side: send a smaller copy.",
                )
            opened.load()  # decode now: truncated files fail here rather than half-way through
            try:
                upright = ImageOps.exif_transpose(opened)
            except Exception:  # noqa: BLE001 - malformed EXIF must not lose an otherwise fine photo
                upright = opened.copy()
                notes.append("EXIF orientation could not be read; used the pixels as stored")
            if opened.mode in ("L", "LA", "I", "I;16", "I;16B", "I;16L", "1"):
                notes.append("greyscale photo: the video will be greyscale too")
            rgb, to_srgb = to_rgb(upright)
    except Image.DecompressionBombError as exc:
        raise FaceError(
            "image_too_large",
            f"{name} is too large to open safely: past Pillow's decompression-bomb limit of "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} megapixels ({exc}). Send a smaller copy.",
        ) from exc
    except UnidentifiedImageError as exc:
        raise FaceError(
            "unreadable_image",
            f"{name} is not an image this pipeline can read (not JPEG, PNG, WebP, TIFF, BMP or "
            "GIF, or its header is damaged); send the portrait as JPEG or PNG.",
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise FaceError(
            "unreadable_image",
            f"{name} could not be decoded ({exc}); the file is probably truncated or corrupt. "
            "Send it again as JPEG or PNG.",
        ) from exc
    if rgb.shape[0] < 16 or rgb.shape[1] < 16:
        raise FaceError(
            "face_too_small",
            f"{name} is only {rgb.shape[1]}x{rgb.shape[0]} px; "
            "send a photo of at least 256x256 px.",
        )
    return rgb, notes, to_srgb


def to_rgb(image: Image.Image) -> tuple[np.ndarray, ImageCms.ImageCmsTransform | None]:
    """Any PIL mode to 8-bit RGB: alpha over grey, 16-bit scaled, CMYK colour-managed.

    Also returns the transform to sRGB for RGB images with another embedded profile.
    """
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # PIL's convert("L") clips 16-bit values at 255 instead of scaling them.
        values = np.asarray(image, dtype=np.float64)
        if mode == "F":
            top = 1.0 if values.max() <= 1.0 else 255.0
        else:
            top = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2), None
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    elif mode in ("L", "1"):
        image = image.convert("RGB")
    profile = _icc_profile(image)
    to_srgb = None
    if profile is not None and image.mode == "CMYK":
        # CMYK must become RGB before anything else can look at it.
        try:
            image = ImageCms.profileToProfile(
                image, profile, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # broken profiles are common; PIL's plain conversion below is close enough
    elif profile is not None and image.mode in ("RGB", "RGBA"):
        try:
            to_srgb = ImageCms.buildTransform(profile, ImageCms.createProfile("sRGB"), "RGB", "RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            to_srgb = None
    if image.mode == "RGBA":
        # Transparent backgrounds become neutral grey: black or white halos look wrong on video.
        background = Image.new("RGB", image.size, GREY)
        background.paste(image, mask=image.getchannel("A"))
        image = background
    elif image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy(), to_srgb


def _icc_profile(image: Image.Image) -> ImageCms.ImageCmsProfile | None:
    """The embedded ICC profile, unless it is missing, broken or already sRGB."""
    icc = image.info.get("icc_profile")
    if not icc:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if image.mode != "CMYK" and "srgb" in ImageCms.getProfileDescription(profile).lower():
            return None
        return profile
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None


def apply_icc(rgb: np.ndarray, to_srgb: ImageCms.ImageCmsTransform | None) -> np.ndarray:
    if to_srgb is None:
        return rgb
    converted = ImageCms.applyTransform(Image.fromarray(rgb), to_srgb)
    return rgb if converted is None else np.asarray(converted, dtype=np.uint8).copy()


def save_image(image: Image.Image, path: Path, suffix: str) -> None:
    """Save in the format the suffix names: JPEG at quality 95 without chroma subsampling, fast PNG."""
    fmt = Image.registered_extensions().get(suffix.lower(), "PNG")
    if fmt == "JPEG":
        image.save(path, format=fmt, quality=95, subsampling=0)
    elif fmt == "PNG":
        image.save(path, format=fmt, compress_level=3)  # level 6 is 2x slower for 5% less
    else:
        image.save(path, format=fmt)
