"""Face preprocessing on the real portraits in ../shared/media/image, and edge cases made from them.

Every crop is re-checked by detecting the face again in the 512x512 output: its centre must be
within 10% of the crop centre (more when framed tighter) and its width within FACE_BAND of the share
the crop was framed at. A contact sheet
of every crop made here is written to test-artifacts/face_contact_sheet.png for a person to look at.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tasks.contact_sheet import make_contact_sheet
from tasks.face import FaceCrop, crop_face
from tasks.face_crop import FACE_FRACTION, MAX_FACE_FRACTION, OFF_CENTRE, PAD_TOLERATED
from tasks.face_detectors import FaceAlignmentDetector, MediaPipeDetector
from tasks.face_types import DetectedFace, FaceError
from tasks.images import load_portrait

PORTRAITS = [
    "facerec_obama.jpg",
    "facerec_lin-manuel-miranda.png",
    "skimage_astronaut.png",
    "infinitetalk_ref_image.png",
    "liveavatar_boy.jpg",
    "liveavatar_fashion_blogger.jpg",
    "liveavatar_kitchen_grandmother.jpg",
    "liveavatar_man.png",
    "musetalk_monalisa.png",
    "sadtalker_happy.png",
]
HARD_CASES = [
    "liveavatar_music_producer.jpg",
    "liveavatar_cyclops_baker.jpg",
    "facerec_two_people.jpg",
]
# Re-detected face width / crop width, around the share the crop was framed at: 0.45, or tighter
# (up to MAX_FACE_FRACTION, the square moved by at most OFF_CENTRE) for photos with little room.
FACE_BAND = 0.10
CENTRE_TOLERANCE = 0.10  # of the crop side, for the usual framing


@pytest.fixture(scope="module")
def detector() -> Iterator[MediaPipeDetector]:
    det = MediaPipeDetector()
    yield det
    det.close()


@pytest.fixture(scope="module")
def sheet(artifacts: Path) -> Iterator[list[tuple[str, Path | None, str]]]:
    """Collects (name, crop or None, caption) from every test; written as one sheet at the end."""
    items: list[tuple[str, Path | None, str]] = []
    yield items
    if items:
        make_contact_sheet(items, artifacts / "face_contact_sheet.png")


def _caption(crop: FaceCrop) -> str:
    """The first clause of each warning, so the contact sheet stays readable."""
    q = crop.quality
    head = f"face {q['face_fraction']:.2f}, yaw {q['yaw']}, sharp {q['blur']:.0f}"
    short = [w.split(":")[0].split(";")[0] for w in crop.warnings]
    return "; ".join([head, *short]) if short else f"{head}; ok"


def _record(sheet: list, name: str, result: FaceCrop | FaceError) -> None:
    if isinstance(result, FaceError):
        sheet.append((name, None, f"[{result.code}] {result}"))
    else:
        sheet.append((name, result.out_path, _caption(result)))


@pytest.fixture(scope="module")
def crops(
    media: Path, detector: MediaPipeDetector, tmp_path_factory: pytest.TempPathFactory, sheet: list
) -> dict[str, FaceCrop | FaceError]:
    """Every real image cropped once; the tests below look at the results."""
    out_dir = tmp_path_factory.mktemp("crops")
    results: dict[str, FaceCrop | FaceError] = {}
    for name in [*PORTRAITS, *HARD_CASES, "skimage_chelsea.png"]:
        try:
            result: FaceCrop | FaceError = crop_face(
                media / "image" / name, out_dir / f"{Path(name).stem}.png", detector=detector
            )
        except FaceError as exc:
            result = exc
        results[name] = result
        _record(sheet, name, result)
    return results


def _redetect(crop_path: Path, detector: MediaPipeDetector) -> DetectedFace:
    rgb = np.asarray(Image.open(crop_path).convert("RGB"))
    faces = detector.detect(rgb)
    assert faces, f"no face found again in {crop_path.name}"
    return max(faces, key=lambda f: f.box[2] - f.box[0])


def _assert_good_crop(crop: FaceCrop, detector: MediaPipeDetector, size: int = 512) -> None:
    with Image.open(crop.out_path) as im:
        assert im.size == (size, size)
        assert im.mode == "RGB"
    face = _redetect(crop.out_path, detector)
    x0, y0, x1, y1 = face.box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    framed = crop.quality["face_fraction"]
    assert FACE_FRACTION - 0.01 <= framed <= MAX_FACE_FRACTION + 0.01
    moved = crop.quality["moved_fraction"]
    assert moved <= OFF_CENTRE + 0.01
    tolerance = CENTRE_TOLERANCE + moved
    assert abs(cx - size / 2) <= tolerance * size, f"face centre x {cx:.0f} is off-centre"
    assert abs(cy - size / 2) <= tolerance * size, f"face centre y {cy:.0f} is off-centre"
    fraction = (x1 - x0) / size
    assert abs(fraction - framed) <= FACE_BAND, f"face is {fraction:.2f} of the crop width, framed at {framed:.2f}"


# ---------------------------------------------------------------------------------------------
# Real portraits


@pytest.mark.parametrize("name", PORTRAITS)
def test_portrait_gives_centred_consistent_crop(
    name: str, crops: dict, detector: MediaPipeDetector
) -> None:
    crop = crops[name]
    assert isinstance(crop, FaceCrop), f"{name} was refused: {crop}"
    _assert_good_crop(crop, detector)
    assert crop.faces_found == 1
    assert crop.backend.startswith("mediapipe")
    assert crop.quality["landmark_source"] == "mesh"
    for key in (
        "left_eye",
        "right_eye",
        "nose_tip",
        "mouth_left",
        "mouth_right",
        "mouth_center",
        "upper_lip",
        "lower_lip",
    ):
        assert key in crop.landmarks
    lx, ly = crop.landmarks["left_eye"]
    rx, ry = crop.landmarks["right_eye"]
    assert lx > rx, "left_eye is the person's left, on the image's right"
    assert max(ly, ry) < crop.landmarks["mouth_center"][1]
    x0, y0, x1, y1 = crop.face_box
    assert 0 <= x0 < x1 <= crop.source_size[0] and 0 <= y0 < y1 <= crop.source_size[1]
    json.dumps(crop.to_dict())  # storable on the asset as is


def test_source_sizes_and_alpha_are_handled(crops: dict) -> None:
    assert crops["infinitetalk_ref_image.png"].source_size == (2366, 1318)  # big RGBA
    assert crops["facerec_lin-manuel-miranda.png"].source_size == (704, 612)  # RGBA


def test_tiny_portrait_is_upscaled_with_a_warning(crops: dict) -> None:
    crop = crops["sadtalker_happy.png"]
    assert crop.quality["upscale"] > 1.25
    assert any(w.startswith("upscaled") for w in crop.warnings)
    # Obama's face is large enough: no upscaling warning.
    assert not any(w.startswith("upscaled") for w in crops["facerec_obama.jpg"].warnings)


def test_near_profile_gives_a_crop_with_a_warning(crops: dict, detector: MediaPipeDetector) -> None:
    crop = crops["liveavatar_music_producer.jpg"]
    assert isinstance(crop, FaceCrop)
    assert crop.quality["yaw"] > 35  # turned towards the image's right
    assert any("head turned" in w for w in crop.warnings)
    _assert_good_crop(crop, detector)


def test_cartoon_cyclops_gives_a_crop_with_a_low_confidence_warning(
    crops: dict, detector: MediaPipeDetector
) -> None:
    crop = crops["liveavatar_cyclops_baker.jpg"]
    assert isinstance(crop, FaceCrop)
    assert crop.quality["score"] < 0.75
    assert any("cartoon" in w for w in crop.warnings)
    with Image.open(crop.out_path) as im:
        assert im.size == (512, 512) and im.mode == "RGB"


def test_cat_is_refused(crops: dict) -> None:
    error = crops["skimage_chelsea.png"]
    assert isinstance(error, FaceError)
    assert error.code == "no_face"
    assert "skimage_chelsea.png" in str(error)
    assert "frontal photo" in str(error)


def test_two_people_give_one_crop_and_a_warning(crops: dict, detector: MediaPipeDetector) -> None:
    crop = crops["facerec_two_people.jpg"]
    assert isinstance(crop, FaceCrop)
    assert crop.faces_found == 2
    assert any(
        w.startswith("2 faces found; used the largest, most central one at (")
        for w in crop.warnings
    )
    _assert_good_crop(crop, detector)


# ---------------------------------------------------------------------------------------------
# Edge cases made from a real portrait


@pytest.fixture(scope="module")
def obama(media: Path) -> Image.Image:
    with Image.open(media / "image" / "facerec_obama.jpg") as im:
        return im.convert("RGB")


@pytest.fixture(scope="module")
def obama_crop(crops: dict) -> FaceCrop:
    return crops["facerec_obama.jpg"]


@pytest.mark.parametrize(
    ("orientation", "stored"),
    [
        (6, Image.Transpose.ROTATE_90),
        (8, Image.Transpose.ROTATE_270),
        (3, Image.Transpose.ROTATE_180),
    ],
)
def test_exif_rotated_jpeg_is_cropped_upright(
    orientation: int,
    stored: Image.Transpose,
    obama: Image.Image,
    obama_crop: FaceCrop,
    detector: MediaPipeDetector,
    tmp_path: Path,
    sheet: list,
) -> None:
    path = tmp_path / f"rotated_{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation: how to turn the stored pixels for display
    obama.transpose(stored).save(path, quality=95, exif=exif)

    crop = crop_face(path, tmp_path / "crop.png", detector=detector)
    _record(sheet, f"EXIF orientation {orientation}", crop)
    assert crop.source_size == obama.size
    eyes_y = max(crop.landmarks["left_eye"][1], crop.landmarks["right_eye"][1])
    assert eyes_y < crop.landmarks["mouth_center"][1], "eyes must be above the mouth"
    assert crop.landmarks["left_eye"][0] > crop.landmarks["right_eye"][0], "not mirrored"
    assert np.allclose(crop.face_box, obama_crop.face_box, atol=12)
    _assert_good_crop(crop, detector)


def test_greyscale_portrait(
    obama: Image.Image, detector: MediaPipeDetector, tmp_path: Path, sheet: list
) -> None:
    path = tmp_path / "grey.png"
    obama.convert("L").save(path)
    crop = crop_face(path, tmp_path / "crop.png", detector=detector)
    _record(sheet, "greyscale (L)", crop)
    _assert_good_crop(crop, detector)
    assert any("greyscale" in w for w in crop.warnings)


def test_cmyk_jpeg_keeps_its_colours(
    obama: Image.Image,
    obama_crop: FaceCrop,
    detector: MediaPipeDetector,
    tmp_path: Path,
    sheet: list,
) -> None:
    path = tmp_path / "cmyk.jpg"
    obama.convert("CMYK").save(path, quality=95)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    crop = crop_face(path, tmp_path / "crop.png", detector=detector)
    _record(sheet, "CMYK JPEG", crop)
    _assert_good_crop(crop, detector)
    # Same colours as the RGB original (an inverted or channel-swapped CMYK would be far off).
    a = np.asarray(Image.open(crop.out_path), dtype=np.float64)
    b = np.asarray(Image.open(obama_crop.out_path), dtype=np.float64)
    assert np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))).max() < 8


def test_16_bit_pngs(
    obama: Image.Image, detector: MediaPipeDetector, tmp_path: Path, sheet: list
) -> None:
    grey8 = np.asarray(obama.convert("L"), dtype=np.uint16)
    grey_path = tmp_path / "grey16.png"
    Image.fromarray(grey8 * 257).save(grey_path)  # I;16 greyscale
    colour_path = tmp_path / "rgb16.png"
    bgr = np.asarray(obama, dtype=np.uint16)[:, :, ::-1] * 257
    assert cv2.imwrite(str(colour_path), np.ascontiguousarray(bgr))  # 48-bit RGB

    for label, path in (("16-bit grey PNG", grey_path), ("16-bit RGB PNG", colour_path)):
        rgb, _ = load_portrait(path)
        assert rgb.dtype == np.uint8
        # Scaled, not clipped: the 8-bit mean brightness survives the round trip.
        assert abs(rgb.mean() - np.asarray(obama.convert("L")).mean()) < 3, label
        crop = crop_face(path, tmp_path / f"{path.stem}_crop.png", detector=detector)
        _record(sheet, label, crop)
        _assert_good_crop(crop, detector)


def test_transparent_background_becomes_neutral_grey(obama: Image.Image, tmp_path: Path) -> None:
    rgba = obama.convert("RGBA")
    alpha = np.zeros((obama.height, obama.width), np.uint8)
    alpha[100:-100, 150:-150] = 255
    rgba.putalpha(Image.fromarray(alpha))
    path = tmp_path / "alpha.png"
    rgba.save(path)
    rgb, _ = load_portrait(path)
    assert tuple(rgb[5, 5]) == (128, 128, 128)
    assert tuple(rgb[obama.height // 2, obama.width // 2]) == obama.getpixel(
        (obama.width // 2, obama.height // 2)
    )

    palette = rgba.convert("P", palette=Image.Palette.ADAPTIVE)  # P with a transparent index
    palette.info["transparency"] = palette.getpixel((5, 5))
    palette.save(tmp_path / "palette.png", transparency=palette.getpixel((5, 5)))
    rgb, _ = load_portrait(tmp_path / "palette.png")
    assert tuple(rgb[5, 5]) == (128, 128, 128)


def test_huge_image_keeps_source_coordinates(
    obama: Image.Image,
    obama_crop: FaceCrop,
    detector: MediaPipeDetector,
    tmp_path: Path,
    sheet: list,
) -> None:
    path = tmp_path / "huge.jpg"
    obama.resize((obama.width * 3, obama.height * 3), Image.Resampling.BICUBIC).save(
        path, quality=90
    )
    crop = crop_face(path, tmp_path / "crop.png", detector=detector)
    _record(sheet, "huge (3x, 2730x3411)", crop)
    assert crop.source_size == (obama.width * 3, obama.height * 3)
    assert np.allclose(
        crop.face_box, np.array(obama_crop.face_box) * 3, atol=0.03 * 3 * obama.width
    )
    _assert_good_crop(crop, detector)


def test_truncated_file_is_unreadable(
    media: Path, tmp_path: Path, detector: MediaPipeDetector, sheet: list
) -> None:
    data = (media / "image" / "facerec_obama.jpg").read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FaceError) as caught:
        crop_face(path, tmp_path / "crop.png", detector=detector)
    _record(sheet, "truncated.jpg", caught.value)
    assert caught.value.code == "unreadable_image"
    assert "truncated.jpg" in str(caught.value)
    assert not (tmp_path / "crop.png").exists()


def test_text_file_named_jpg_is_unreadable(
    tmp_path: Path, detector: MediaPipeDetector, sheet: list
) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n")
    with pytest.raises(FaceError) as caught:
        crop_face(path, tmp_path / "crop.png", detector=detector)
    _record(sheet, "notes.jpg (text)", caught.value)
    assert caught.value.code == "unreadable_image"
    assert "notes.jpg" in str(caught.value)


def test_missing_file(tmp_path: Path, detector: MediaPipeDetector) -> None:
    with pytest.raises(FaceError) as caught:
        crop_face(tmp_path / "nowhere.png", tmp_path / "crop.png", detector=detector)
    assert caught.value.code == "missing_image"


def test_face_smaller_than_minimum_is_refused(
    obama: Image.Image, detector: MediaPipeDetector, tmp_path: Path, sheet: list
) -> None:
    small = obama.resize(
        (obama.width // 6, obama.height // 6), Image.Resampling.LANCZOS
    )  # face ~47 px
    path = tmp_path / "small_face.png"
    small.save(path)
    with pytest.raises(FaceError) as caught:
        crop_face(path, tmp_path / "crop.png", detector=detector, min_face_px=64)
    _record(sheet, "small_face.png (min 64 px)", caught.value)
    assert caught.value.code == "face_too_small"
    assert "small_face.png" in str(caught.value)
    # The same image is accepted, upscaled and warned about, when the minimum allows it.
    crop = crop_face(path, tmp_path / "crop.png", detector=detector, min_face_px=32)
    assert any(w.startswith("upscaled") for w in crop.warnings)


@pytest.mark.parametrize("pad_mode", ["blur", "reflect"])
def test_a_face_near_the_edge_is_framed_tighter_not_padded_with_blur(
    pad_mode: str,
    obama: Image.Image,
    obama_crop: FaceCrop,
    detector: MediaPipeDetector,
    tmp_path: Path,
    sheet: list,
) -> None:
    # Cut the photo just left of the face: the usual framing would run well past the left edge
    # (a third of the crop invented, as it was before the tighter framing existed).
    x0, _, x1, _ = obama_crop.face_box
    cut = round(x0 - 0.05 * (x1 - x0))
    path = tmp_path / "edge.png"
    obama.crop((cut, 0, obama.width, obama.height)).save(path)

    crop = crop_face(path, tmp_path / "crop.png", detector=detector, pad_mode=pad_mode)
    _record(sheet, f"face near edge ({pad_mode})", crop)
    _assert_good_crop(crop, detector)
    assert crop.quality["padded_fraction"] <= PAD_TOLERATED
    assert crop.quality["face_fraction"] > FACE_FRACTION + 0.05
    assert any(w.startswith("framed tighter") for w in crop.warnings)
    assert not any("outside the photo" in w for w in crop.warnings)
    # No distortion: the crop is exactly that region of the photo, resized with its aspect kept.
    cx0, cy0, cx1, cy1 = crop.crop_box
    region = obama.crop((int(cut + cx0), int(cy0), int(cut + cx1), int(cy1)))
    ref = np.asarray(region.resize((512, 512), Image.Resampling.LANCZOS), dtype=np.float64)
    ours = np.asarray(Image.open(crop.out_path), dtype=np.float64)
    assert np.abs(ours[4:-4, 4:-4] - ref[4:-4, 4:-4]).mean() < 4


def test_a_photo_with_no_room_at_all_is_refused_with_the_reason(
    obama: Image.Image, obama_crop: FaceCrop, detector: MediaPipeDetector, tmp_path: Path
) -> None:
    # Just the face box and a sliver: no framing can avoid inventing most of the crop.
    x0, y0, x1, y1 = obama_crop.face_box
    path = tmp_path / "face-only.png"
    obama.crop((round(x0), round(y0 - 0.1 * (y1 - y0)), round(x1), round(y1))).save(path)
    with pytest.raises(FaceError) as caught:
        crop_face(path, tmp_path / "crop.png", detector=detector, min_face_px=32)
    assert caught.value.code == "too_tight"
    assert "AVATARFLOW_FACE_MAX_PADDED" in str(caught.value) and "more space around the head" in str(caught.value)


def test_blurry_photo_is_warned_about(
    obama: Image.Image,
    obama_crop: FaceCrop,
    detector: MediaPipeDetector,
    tmp_path: Path,
    sheet: list,
) -> None:
    path = tmp_path / "blurry.jpg"
    blurred = cv2.GaussianBlur(np.asarray(obama), (0, 0), 5)
    Image.fromarray(blurred).save(path, quality=95)
    crop = crop_face(path, tmp_path / "crop.png", detector=detector)
    _record(sheet, "blurred (sigma 5)", crop)
    assert any("blurry" in w for w in crop.warnings)
    assert not any("blurry" in w for w in obama_crop.warnings)
    assert crop.quality["blur"] < obama_crop.quality["blur"] / 5


def test_output_format_follows_suffix(
    media: Path, detector: MediaPipeDetector, tmp_path: Path
) -> None:
    out = tmp_path / "deep" / "crop.jpg"
    crop_face(media / "image" / "skimage_astronaut.png", out, detector=detector, size=256)
    with Image.open(out) as im:
        assert im.format == "JPEG" and im.size == (256, 256)
    assert [p.name for p in out.parent.iterdir()] == ["crop.jpg"]  # no temporary left behind


def test_bad_pad_mode_is_a_programming_error(
    media: Path, tmp_path: Path, detector: MediaPipeDetector
) -> None:
    with pytest.raises(ValueError):
        crop_face(
            media / "image" / "skimage_astronaut.png",
            tmp_path / "c.png",
            detector=detector,
            pad_mode="wrap",
        )


# ---------------------------------------------------------------------------------------------
# Without MediaPipe: the crop geometry with a stub detector, and the optional backend's refusals


class StubDetector:
    """Returns one fixed face with only detector-style keypoints."""

    name = "stub"

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        return [
            DetectedFace(
                box=(250.0, 200.0, 340.0, 290.0),
                score=0.9,
                landmarks={
                    "right_eye": (275.0, 230.0),
                    "left_eye": (315.0, 230.0),
                    "nose_tip": (295.0, 250.0),
                    "mouth_center": (295.0, 270.0),
                    "right_ear": (255.0, 240.0),
                    "left_ear": (335.0, 240.0),
                },
            )
        ]


def test_crop_geometry_with_a_stub_detector(tmp_path: Path) -> None:
    path = tmp_path / "flat.png"
    Image.new("RGB", (600, 600), (90, 120, 150)).save(path)
    crop = crop_face(path, tmp_path / "crop.png", detector=StubDetector())
    x0, y0, x1, y1 = crop.crop_box
    assert x1 - x0 == y1 - y0 == 200  # 90 px face / 0.45
    # Centred on the mean of the eyes-mouth midpoint (295, 250) and the box centre (295, 245),
    # then dropped by 6% of the side to make room for the shoulders.
    assert (x0 + x1) / 2 == pytest.approx(295, abs=1)
    assert (y0 + y1) / 2 == pytest.approx(247.5 + 0.06 * 200, abs=1)
    assert crop.quality["face_fraction"] == pytest.approx(0.45, abs=0.01)
    assert crop.quality["yaw"] == pytest.approx(0, abs=1)
    assert crop.quality["roll"] == pytest.approx(0, abs=1)
    assert crop.quality["pitch"] is None
    assert crop.landmarks["mouth_left"][0] > crop.landmarks["mouth_right"][0]
    assert any("mouth corners estimated" in w for w in crop.warnings)
    assert crop.backend == "stub"


def test_face_alignment_without_weights_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FaceError) as caught:
        FaceAlignmentDetector(tmp_path)
    message = str(caught.value)
    assert caught.value.code == "backend_unavailable"
    assert "s3fd-619a316812.pth" in message and "2DFAN4-cd938726ad.zip" in message
    assert "AVATARFLOW_FACE_ALIGNMENT_WEIGHTS" in message


def test_face_alignment_without_the_package_says_so(tmp_path: Path) -> None:
    try:
        import face_alignment  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("face-alignment is installed here")
    for name in ("s3fd-619a316812.pth", "2DFAN4-cd938726ad.zip"):
        (tmp_path / name).write_bytes(b"placeholder")
    with pytest.raises(FaceError) as caught:
        FaceAlignmentDetector(tmp_path)
    assert caught.value.code == "backend_unavailable"
    assert "face-alignment" in str(caught.value)


def test_colour_profile_is_applied_to_the_crop(
    media: Path, crops: dict, detector: MediaPipeDetector, tmp_path: Path
) -> None:
    """Lin-Manuel's PNG carries a Display P3 profile: the crop must come out in sRGB."""
    source = media / "image" / "facerec_lin-manuel-miranda.png"
    managed, _ = load_portrait(source)
    with Image.open(source) as im:
        raw = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert np.abs(managed - raw).mean() > 1  # the profile changes the colours
    # Cropping the sRGB pixels directly gives the same crop as colour-managing the crop.
    srgb_path = tmp_path / "srgb.png"
    Image.fromarray(managed).save(srgb_path)
    reference = crop_face(srgb_path, tmp_path / "crop.png", detector=detector)
    ours = np.asarray(Image.open(crops[source.name].out_path), dtype=np.float64)
    theirs = np.asarray(Image.open(reference.out_path), dtype=np.float64)
    assert np.abs(ours - theirs).mean() < 3
