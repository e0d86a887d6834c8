"""Blocking Pillow work behind the nodes: decoded latents, previews and image operations."""

from __future__ import annotations

import hashlib
import io
import textwrap

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont, ImageOps, PngImagePlugin

from .nodes import ControlHint, Images, Latent

RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
UPSCALE_METHODS = list(RESAMPLE)


def _digest(latent: Latent, index: int) -> bytes:
    seed = f"{latent.model}|{latent.positive}|{latent.negative}|{latent.seed}|{index}"
    return hashlib.sha256(seed.encode()).digest()


def _gradient(digest: bytes, size: tuple[int, int]) -> Image.Image:
    corners = Image.new("RGB", (2, 2))
    corners.putdata([tuple(digest[i : i + 3]) for i in (0, 3, 6, 9)])
    return corners.resize(size, Image.Resampling.BILINEAR)


def _shapes(image: Image.Image, digest: bytes) -> None:
    draw = ImageDraw.Draw(image)
    width, height = image.size
    for k in range(4):
        b = digest[12 + 5 * k : 17 + 5 * k]
        x0, y0 = b[0] * width // 256, b[1] * height // 256
        radius = max(2, b[2] * min(width, height) // 1024)
        box = (x0 - radius, y0 - radius, x0 + radius, y0 + radius)
        colour = (b[3], b[4], b[2])
        if k % 2:
            draw.rectangle(box, fill=colour)
        else:
            draw.ellipse(box, fill=colour)


def _caption(image: Image.Image, text: str) -> None:
    width, height = image.size
    size = max(8, min(width, height) // 16)
    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.load_default(size=size)
    except OSError:
        font = ImageFont.load_default()
    chars = max(8, int(width / (size * 0.6)))
    lines = textwrap.wrap(text, chars)[: max(1, height // (size * 3))]
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        y = size // 2 + row * (size + 2)
        draw.text((size // 2 + 1, y + 1), line, fill=(0, 0, 0), font=font)
        draw.text((size // 2, y), line, fill=(255, 255, 255), font=font)


def decode_latent(latent: Latent) -> Images:
    """What VAEDecode shows: the source pixels, or a deterministic picture for a sampled latent."""
    size = (latent.width, latent.height)
    images: Images = []
    for index in range(latent.batch_size):
        source = latent.source[index % len(latent.source)] if latent.source else None
        if latent.seed is None:
            images.append(source.copy() if source else Image.new("RGB", size, (128, 128, 128)))
            continue
        digest = _digest(latent, index)
        picture = _gradient(digest, size)
        _shapes(picture, digest)
        _caption(picture, latent.positive or "(empty prompt)")
        if source is not None and latent.denoise < 1.0:
            picture = Image.blend(source.resize(size), picture, latent.denoise)
        for control in latent.controls:
            picture = _follow_hint(picture, control, index, latent.denoise)
        images.append(picture)
    return images


def _follow_hint(
    picture: Image.Image, control: ControlHint, index: int, denoise: float
) -> Image.Image:
    """Draw the hint's lit pixels (a pose skeleton's lines, a canny map's edges) into the
    picture, as strongly as the ControlNet steers: its strength over its share of the steps,
    and only as much as the sampler was allowed to change (denoise)."""
    span = max(0.0, control.end_percent - control.start_percent)
    weight = min(1.0, control.strength) * span * denoise
    if weight <= 0 or not control.images:
        return picture
    hint = control.images[index % len(control.images)].convert("RGB").resize(picture.size)
    red, green, blue = hint.split()
    lit = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    mask = lit.point(lambda value: round(value * weight))
    return Image.composite(hint, picture, mask)


def sampler_preview(latent: Latent, step: int, steps: int) -> Image.Image:
    """A latent2rgb-sized (1/8) preview that sharpens from noise towards the final picture."""
    size = (max(8, latent.width // 8), max(8, latent.height // 8))
    digest = _digest(latent, 0)
    picture = _gradient(digest, size)
    _shapes(picture, digest)
    if latent.source and latent.denoise < 1.0:
        picture = Image.blend(latent.source[0].resize(size), picture, latent.denoise)
    noise = Image.effect_noise(size, 64).convert("RGB")
    return Image.blend(noise, picture, min(1.0, step / max(1, steps)))


def empty_image(width: int, height: int, batch_size: int, color: int) -> Images:
    rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
    return [Image.new("RGB", (width, height), rgb) for _ in range(batch_size)]


def invert(images: Images) -> Images:
    return [ImageOps.invert(image.convert("RGB")) for image in images]


def scale(images: Images, method: str, width: int, height: int, crop: str = "disabled") -> Images:
    out: Images = []
    for image in images:
        w, h = width, height
        if w == 0 and h == 0:
            out.append(image.copy())
            continue
        if w == 0:
            w = max(1, round(image.width * h / image.height))
        if h == 0:
            h = max(1, round(image.height * w / image.width))
        if crop == "center":
            out.append(ImageOps.fit(image, (w, h), RESAMPLE[method]))
        else:
            out.append(image.resize((w, h), RESAMPLE[method]))
    return out


def scale_by(images: Images, method: str, factor: float) -> Images:
    return [
        image.resize(
            (max(1, round(image.width * factor)), max(1, round(image.height * factor))),
            RESAMPLE[method],
        )
        for image in images
    ]


def blur(images: Images, radius: int, sigma: float) -> Images:
    # ComfyUI uses a (2r+1) Gaussian kernel; Pillow's radius is the sigma, bounded by the kernel.
    return [image.filter(ImageFilter.GaussianBlur(min(float(radius), sigma))) for image in images]


def composite(
    destination: Images,
    source: Images,
    x: int,
    y: int,
    resize_source: bool,
    mask: Image.Image | None,
) -> Images:
    out: Images = []
    for index, dest in enumerate(destination):
        canvas = dest.copy().convert("RGB")
        src = source[index % len(source)].convert("RGB")
        if resize_source:
            src = src.resize(canvas.size, Image.Resampling.BILINEAR)
        paste_mask = None
        if mask is not None:
            paste_mask = mask.convert("L").resize(src.size, Image.Resampling.BILINEAR)
        canvas.paste(src, (x, y), paste_mask)
        out.append(canvas)
    return out


def load_image(path: str) -> tuple[Images, Image.Image]:
    """LoadImage: every frame as RGB, and the mask as 1 - alpha (64x64 zeros without alpha)."""
    images: Images = []
    mask: Image.Image | None = None
    with Image.open(path) as opened:
        for frame_index in range(getattr(opened, "n_frames", 1)):
            opened.seek(frame_index)
            frame = ImageOps.exif_transpose(opened) or opened
            if images and frame.size != images[0].size:
                continue
            if frame.mode == "P" and "transparency" in frame.info:
                frame = frame.convert("RGBA")
            if mask is None and "A" in frame.getbands():
                mask = ImageOps.invert(frame.getchannel("A"))
            images.append(frame.convert("RGB"))
    return images, mask if mask is not None else Image.new("L", (64, 64), 0)


def invert_mask(mask: Image.Image) -> Image.Image:
    return ImageOps.invert(mask.convert("L"))


def mask_from_channel(path: str, channel: str) -> Image.Image:
    with Image.open(path) as opened:
        image = opened.convert("RGBA")
    band = {"red": "R", "green": "G", "blue": "B", "alpha": "A"}[channel]
    result = image.getchannel(band)
    return ImageOps.invert(result) if band == "A" else result


def png_bytes(image: Image.Image, text: dict[str, str], compress_level: int = 4) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=compress_level)
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image, max_size: int = 512) -> bytes:
    preview = image.convert("RGB")
    if max(preview.size) > max_size:
        preview.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    preview.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()
