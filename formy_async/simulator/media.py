"""Blocking media work behind the save nodes: animated WEBP/PNG (Pillow), video and audio (PyAV)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image, PngImagePlugin

from .nodes import Audio, Images, Video

WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}
WEBM_ENCODERS = {"vp9": "libvpx-vp9", "av1": "libsvtav1"}
VIDEO_ENCODERS = {"h264": "h264", "av1": "libsvtav1"}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
AUDIO_ENCODERS = {"flac": "flac", "mp3": "libmp3lame", "opus": "libopus"}
BIT_RATES = {"64k": 64000, "96k": 96000, "128k": 128000, "192k": 192000, "320k": 320000}
_FLOAT32 = 4


def _rgb(images: Images) -> list[Image.Image]:
    return [image.convert("RGB") for image in images]


def _video_frame(image: Image.Image) -> av.VideoFrame:
    frame: av.VideoFrame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]
    return frame


def _picture(frame: av.VideoFrame) -> Image.Image:
    image: Image.Image = frame.to_image()  # type: ignore[no-untyped-call]
    return image


def _video_stream(
    container: av.container.OutputContainer, codec: str, rate: Fraction
) -> av.VideoStream:
    # PyAV types add_stream by codec name literal; ours come from a table, so narrow here.
    stream = container.add_stream(codec, rate=rate)
    assert isinstance(stream, av.VideoStream)
    return stream


def _audio_stream(
    container: av.container.OutputContainer, codec: str, rate: int, channels: int
) -> av.AudioStream:
    stream = container.add_stream(codec, rate=rate, layout=_layout(channels))
    assert isinstance(stream, av.AudioStream)
    return stream


def save_animated_webp(
    images: Images,
    path: Path,
    fps: float,
    lossless: bool,
    quality: int,
    method: str,
    exif: Mapping[int, str],
) -> None:
    frames = _rgb(images)
    metadata = frames[0].getexif()
    for tag, text in exif.items():
        metadata[tag] = text
    frames[0].save(
        path,
        format="WEBP",
        save_all=True,
        duration=int(1000.0 / fps),
        append_images=frames[1:],
        exif=metadata,
        lossless=lossless,
        quality=quality,
        method=WEBP_METHODS[method],
    )


def save_animated_png(
    images: Images, path: Path, fps: float, compress_level: int, chunks: Mapping[str, str]
) -> None:
    # ComfyUI writes its metadata as private "comf" chunks after the image data, not as tEXt.
    info = PngImagePlugin.PngInfo()
    for key, text in chunks.items():
        info.add(b"comf", key.encode("latin-1") + b"\0" + text.encode("latin-1"), after_idat=True)
    frames = _rgb(images)
    frames[0].save(
        path,
        format="PNG",
        pnginfo=info,
        compress_level=compress_level,
        save_all=True,
        duration=int(1000.0 / fps),
        append_images=frames[1:],
    )


def save_webm(
    images: Images, path: Path, codec: str, fps: float, crf: float, metadata: Mapping[str, str]
) -> None:
    with av.open(str(path), mode="w") as container:
        for key, text in metadata.items():
            container.metadata[key] = text
        rate = Fraction(round(fps * 1000), 1000)
        stream = _video_stream(container, WEBM_ENCODERS[codec], rate)
        stream.width, stream.height = images[0].size
        stream.pix_fmt = "yuv420p10le" if codec == "av1" else "yuv420p"
        stream.bit_rate = 0
        stream.options = {"crf": str(crf), **({"preset": "6"} if codec == "av1" else {})}
        for image in _rgb(images):
            for packet in stream.encode(_video_frame(image)):
                container.mux(packet)
        container.mux(stream.encode())


def save_video(
    video: Video, path: Path, codec: str, crf: float | None, metadata: Mapping[str, str]
) -> None:
    """The container follows the file name (.mp4, .mkv, .webm); AAC (Opus in WebM) carries the
    audio, cut to the frames' length, as VideoFromComponents.save_to does."""
    frame_rate = Fraction(round(video.frame_rate * 1000), 1000)
    audio = video.audio if video.audio is not None and video.audio.clips else None
    options = {"movflags": "use_metadata_tags"} if path.suffix == ".mp4" else {}
    with av.open(str(path), mode="w", options=options) as output:
        for key, text in metadata.items():
            output.metadata[key] = text
        stream = _video_stream(output, VIDEO_ENCODERS[codec], frame_rate)
        stream.width, stream.height = video.size
        stream.pix_fmt = "yuv420p"
        if crf is not None:
            stream.options = {"crf": str(crf)}
        # Every stream must exist before the first packet is muxed.
        sound_codec = "libopus" if path.suffix == ".webm" else "aac"
        sound = None
        if audio is not None:
            rate = opus_rate(audio.sample_rate) if sound_codec == "libopus" else audio.sample_rate
            sound = _audio_stream(output, sound_codec, rate, audio.channels)
        for image in _rgb(list(video.frames)):
            output.mux(stream.encode(_video_frame(image).reformat(format="yuv420p")))
        output.mux(stream.encode(None))
        if audio is not None and sound is not None:
            samples = math.ceil(audio.sample_rate / frame_rate * len(video.frames))
            _encode_audio(output, sound, audio, _audio_frame(audio, audio.clips[0], samples))


def _layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"


def _audio_frame(audio: Audio, clip: bytes, samples: int | None = None) -> av.AudioFrame:
    data = clip if samples is None else clip[: samples * audio.channels * _FLOAT32]
    count = len(data) // (audio.channels * _FLOAT32)
    frame = av.AudioFrame(format="flt", layout=_layout(audio.channels), samples=count)
    frame.planes[0].update(data)
    frame.sample_rate = audio.sample_rate
    frame.pts = 0
    return frame


def opus_rate(rate: int) -> int:
    """The next sample rate Opus supports (48 kHz at most), as SaveAudioOpus resamples to."""
    return next((r for r in OPUS_RATES if r >= rate), 48000)


def _encode_audio(
    output: av.container.OutputContainer,
    stream: av.AudioStream,
    audio: Audio,
    frame: av.AudioFrame,
) -> None:
    frames = [frame]
    if stream.rate != audio.sample_rate:  # Opus takes only some rates: resample, as ComfyUI does
        layout = _layout(audio.channels)
        frames = av.AudioResampler(format="flt", layout=layout, rate=stream.rate).resample(frame)
    for part in frames:
        output.mux(stream.encode(part))
    output.mux(stream.encode(None))


def save_audio_clip(
    audio: Audio,
    clip: bytes,
    path: Path,
    file_format: str,
    quality: str,
    metadata: Mapping[str, str],
) -> None:
    rate = opus_rate(audio.sample_rate) if file_format == "opus" else audio.sample_rate
    with av.open(str(path), mode="w", format=file_format) as output:
        for key, text in metadata.items():
            output.metadata[key] = text
        stream = _audio_stream(output, AUDIO_ENCODERS[file_format], rate, audio.channels)
        if quality in BIT_RATES:
            stream.bit_rate = BIT_RATES[quality]
        elif quality == "V0":
            stream.codec_context.qscale = True  # ComfyUI's V0: variable bit rate, best quality
        _encode_audio(output, stream, audio, _audio_frame(audio, clip))


def silence(duration: float, sample_rate: int, channels: int) -> Audio:
    samples = round(duration * sample_rate)
    return Audio(sample_rate, channels, (bytes(samples * channels * _FLOAT32),))


def _decode_audio(container: av.container.InputContainer) -> Audio | None:
    if not container.streams.audio:
        return None
    stream = container.streams.audio[0]
    channels = min(2, stream.channels)
    resampler = av.AudioResampler(format="flt", layout=_layout(channels), rate=stream.sample_rate)
    chunks: list[bytes] = []
    for frame in container.decode(stream):
        for packed in resampler.resample(frame):
            chunks.append(bytes(packed.planes[0])[: packed.samples * channels * _FLOAT32])
    for packed in resampler.resample(None):
        chunks.append(bytes(packed.planes[0])[: packed.samples * channels * _FLOAT32])
    if not chunks:
        raise ValueError("No audio frames decoded.")
    return Audio(stream.sample_rate, channels, (b"".join(chunks),))


def load_audio(path: Path) -> Audio:
    with av.open(str(path)) as container:
        audio = _decode_audio(container)
    if audio is None:
        raise ValueError("No audio stream found in the file.")
    return audio


def load_video(path: Path) -> Video:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(1)
        frames = tuple(_picture(frame) for frame in container.decode(stream))
    with av.open(str(path)) as container:
        audio = _decode_audio(container)
    return Video(frames, Fraction(rate), audio)
