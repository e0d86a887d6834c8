"""The text-to-image node types: loaders, text encoding, latents, KSampler and the VAE."""

from __future__ import annotations

import asyncio
import dataclasses

from . import pictures
from .nodes import (
    Clip,
    Conditioning,
    Env,
    JsonDict,
    Latent,
    Model,
    NodeContext,
    NodeDef,
    NodeResult,
    Sections,
    Vae,
    combo_spec,
    float_spec,
    int_spec,
)

SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm",
    "ipndm", "ipndm_v", "deis", "res_multistep", "ddim", "uni_pc", "uni_pc_bh2",
]  # fmt: skip
SCHEDULERS = [
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
    "linear_quadratic", "kl_optimal",
]  # fmt: skip
MAX_RESOLUTION = 16384
MAX_SEED = 0xFFFFFFFFFFFFFFFF


async def _load_checkpoint(ctx: NodeContext, a: JsonDict) -> NodeResult:
    name = a["ckpt_name"]
    await ctx.env.load_model(name)
    return NodeResult((Model(name), Clip(name), Vae(name)))


async def _load_vae(ctx: NodeContext, a: JsonDict) -> NodeResult:
    await ctx.env.load_model(a["vae_name"])
    return NodeResult((Vae(a["vae_name"]),))


async def _load_unet(ctx: NodeContext, a: JsonDict) -> NodeResult:
    await ctx.env.load_model(a["unet_name"])
    return NodeResult((Model(a["unet_name"]),))


async def _load_lora(ctx: NodeContext, a: JsonDict) -> NodeResult:
    model: Model = a["model"]
    clip: Clip = a["clip"]
    await ctx.env.load_model(a["lora_name"])
    model_lora = (a["lora_name"], float(a["strength_model"]))
    clip_lora = (a["lora_name"], float(a["strength_clip"]))
    return NodeResult(
        (
            Model(model.name, (*model.loras, model_lora)),
            Clip(clip.name, (*clip.loras, clip_lora)),
        )
    )


async def _encode_text(ctx: NodeContext, a: JsonDict) -> NodeResult:
    clip: Clip = a["clip"]
    return NodeResult((Conditioning(str(a["text"]), f"{clip.name}{clip.loras}"),))


async def _empty_latent(ctx: NodeContext, a: JsonDict) -> NodeResult:
    width, height = int(a["width"]) // 8 * 8, int(a["height"]) // 8 * 8
    return NodeResult((Latent(width, height, int(a["batch_size"])),))


async def _sample(ctx: NodeContext, a: JsonDict) -> NodeResult:
    latent: Latent = a["latent_image"]
    model: Model = a["model"]
    sampled = dataclasses.replace(
        latent,
        seed=int(a["seed"]),
        positive=a["positive"].text,
        negative=a["negative"].text,
        model=f"{model.name}{model.loras}|{a['sampler_name']}|{a['scheduler']}|{a['cfg']}",
        denoise=float(a["denoise"]),
        controls=a["positive"].controls,
    )
    steps = int(a["steps"])
    config = ctx.env.config
    for step in range(1, steps + 1):
        if config.step_delay:
            await asyncio.sleep(config.step_delay)
        preview = None
        if config.previews:
            preview = await asyncio.to_thread(pictures.sampler_preview, sampled, step, steps)
        await ctx.progress(step, steps, preview)
    return NodeResult((sampled,))


async def _decode(ctx: NodeContext, a: JsonDict) -> NodeResult:
    images = await asyncio.to_thread(pictures.decode_latent, a["samples"])
    return NodeResult((images,))


async def _encode_pixels(ctx: NodeContext, a: JsonDict) -> NodeResult:
    images = a["pixels"]
    width, height = images[0].width // 8 * 8, images[0].height // 8 * 8
    # as ComfyUI does: the multiple-of-8 window, centred (the odd pixel goes to the far edge)
    left, top = images[0].width % 8 // 2, images[0].height % 8 // 2
    box = (left, top, left + width, top + height)
    cropped = tuple(image.convert("RGB").crop(box) for image in images)
    return NodeResult((Latent(width, height, len(images), source=cropped),))


def _checkpoint_inputs(env: Env) -> Sections:
    tip = "The name of the checkpoint (model) to load."
    return {"required": {"ckpt_name": combo_spec(env.config.checkpoints, tooltip=tip)}}


def _lora_inputs(env: Env) -> Sections:
    strength = float_spec(1.0, -100.0, 100.0, 0.01)
    return {
        "required": {
            "model": ["MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}],
            "clip": ["CLIP", {"tooltip": "The CLIP model the LoRA will be applied to."}],
            "lora_name": combo_spec(env.config.loras, tooltip="The name of the LoRA."),
            "strength_model": strength,
            "strength_clip": strength,
        }
    }


def _text_inputs(env: Env) -> Sections:
    return {
        "required": {
            "text": ["STRING", {"multiline": True, "dynamicPrompts": True}],
            "clip": ["CLIP", {"tooltip": "The CLIP model used for encoding the text."}],
        }
    }


def _latent_inputs(env: Env) -> Sections:
    return {
        "required": {
            "width": int_spec(512, 16, MAX_RESOLUTION, 8),
            "height": int_spec(512, 16, MAX_RESOLUTION, 8),
            "batch_size": int_spec(1, 1, 4096),
        }
    }


def _sampler_inputs(env: Env) -> Sections:
    return {
        "required": {
            "model": ["MODEL"],
            "seed": int_spec(0, 0, MAX_SEED, control_after_generate=True),
            "steps": int_spec(20, 1, 10000),
            "cfg": float_spec(8.0, 0.0, 100.0, 0.1, round=0.01),
            "sampler_name": combo_spec(SAMPLERS),
            "scheduler": combo_spec(SCHEDULERS),
            "positive": ["CONDITIONING"],
            "negative": ["CONDITIONING"],
            "latent_image": ["LATENT"],
            "denoise": float_spec(1.0, 0.0, 1.0, 0.01),
        }
    }


CORE_NODES: tuple[NodeDef, ...] = (
    NodeDef(
        "CheckpointLoaderSimple", "Load Checkpoint", "loaders", _checkpoint_inputs,
        ("MODEL", "CLIP", "VAE"), _load_checkpoint,
        description="Loads a diffusion model checkpoint.",
    ),
    NodeDef(
        "VAELoader", "Load VAE", "loaders",
        lambda env: {"required": {"vae_name": combo_spec(env.config.vaes)}},
        ("VAE",), _load_vae,
    ),
    NodeDef(
        "UNETLoader", "Load Diffusion Model", "advanced/loaders",
        lambda env: {
            "required": {
                "unet_name": combo_spec(env.config.diffusion_models),
                "weight_dtype": combo_spec(
                    ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
                ),
            }
        },
        ("MODEL",), _load_unet,
    ),
    NodeDef(
        "LoraLoader", "Load LoRA", "loaders", _lora_inputs, ("MODEL", "CLIP"), _load_lora,
        description="LoRAs are used to modify diffusion and CLIP models.",
    ),
    NodeDef(
        "CLIPTextEncode", "CLIP Text Encode (Prompt)", "conditioning", _text_inputs,
        ("CONDITIONING",), _encode_text,
        description="Encodes a text prompt using a CLIP model.",
    ),
    NodeDef(
        "EmptyLatentImage", "Empty Latent Image", "latent", _latent_inputs, ("LATENT",),
        _empty_latent, description="Create a new batch of empty latent images.",
    ),
    NodeDef(
        "KSampler", "KSampler", "sampling", _sampler_inputs, ("LATENT",), _sample,
        description="Uses the provided model to denoise the latent image.",
    ),
    NodeDef(
        "VAEDecode", "VAE Decode", "latent",
        lambda env: {"required": {"samples": ["LATENT"], "vae": ["VAE"]}},
        ("IMAGE",), _decode, description="Decodes latent images back into pixel space images.",
    ),
    NodeDef(
        "VAEEncode", "VAE Encode", "latent",
        lambda env: {"required": {"pixels": ["IMAGE"], "vae": ["VAE"]}},
        ("LATENT",), _encode_pixels,
    ),
)  # fmt: skip
