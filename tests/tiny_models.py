"""Tiny random-weight diffusers video pipelines, built in code and saved to a directory.

Each ``save_*`` function builds a real pipeline of the named family at toy size (10k-160k
parameters per part, a Unigram tokenizer made with ``tokenizers``), writes it with
``save_pretrained`` and returns the directory: a local checkpoint that
``DiffusionPipeline.from_pretrained`` (and so a registry entry's ``weights``) loads with no
network. The VAEs keep their family's compression (Wan: 4x in time, 8x in space, 16x for
TI2V-5B; LTX: 8x in time, 32x in space), so the frame and size rules are the real ones.

At 32x32 pixels a 97-frame Wan clip runs in a fraction of a second, most of it in the VAE.
Below the builders: helpers for tests that run these checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import numpy as np
import numpy.typing as npt
import pytest
import torch
from diffusers import (
    AutoencoderKLLTXVideo,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    LTXConditionPipeline,
    LTXVideoTransformer3DModel,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

TEXT_DIM = 32
"""Hidden size of the tiny text encoders (the transformers' text input)."""

_CLIP_TOKENS = 5
"""Tokens the tiny CLIP image encoder yields per image: (8 / 4) ** 2 patches + 1."""


def save_wan_t2v(directory: Path) -> Path:
    """A Wan 2.1 text-to-video checkpoint (``WanPipeline``, 16-channel latents) in ``directory``.

    Registry entry: ``first_frame = false``, ``last_frame = false``; canvas sides in 16s."""
    tokenizer = _tokenizer()
    pipeline = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=_umt5(len(tokenizer)),
        vae=_wan_vae(),
        scheduler=_unipc(),
        transformer=_wan_transformer(in_channels=16, out_channels=16),
    )
    return _saved(pipeline, directory)


def save_wan_i2v(directory: Path, *, last_frame: bool = False) -> Path:
    """A Wan 2.1 image-to-video checkpoint (``WanImageToVideoPipeline`` with a CLIP image
    encoder); ``last_frame=True`` makes it first-last-frame (FLF2V: the transformer carries
    position embeddings for two images and needs both).

    Registry entry: ``first_frame = true`` and ``last_frame`` as built; canvas sides in 16s."""
    tokenizer = _tokenizer()
    torch.manual_seed(0)
    clip = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=4,
            projection_dim=4,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=8,
            intermediate_size=16,
            patch_size=4,
        )
    )
    pipeline = WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=_umt5(len(tokenizer)),
        vae=_wan_vae(),
        scheduler=_unipc(),
        image_processor=CLIPImageProcessor(crop_size=8, size={"shortest_edge": 8}),
        image_encoder=clip,
        transformer=_wan_transformer(
            in_channels=36,
            out_channels=16,
            image_dim=4,
            pos_embed_seq_len=2 * _CLIP_TOKENS if last_frame else None,
        ),
    )
    return _saved(pipeline, directory)


def save_wan_ti2v(directory: Path) -> Path:
    """A Wan 2.2 TI2V-5B-style checkpoint: ``WanPipeline`` with ``expand_timesteps`` and a
    48-channel VAE compressing 16x in space, as the published checkpoint is laid out.

    Registry entry: ``last_frame = false`` (text or a first frame); canvas sides in 32s."""
    tokenizer = _tokenizer()
    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=48,
        in_channels=12,
        out_channels=12,
        is_residual=True,
        patch_size=2,
        latents_mean=[0.0] * 48,
        latents_std=[1.0] * 48,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        temperal_downsample=[False, True, True],
    ).eval()
    pipeline = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=_umt5(len(tokenizer)),
        vae=vae,
        scheduler=_unipc(),
        transformer=_wan_transformer(in_channels=48, out_channels=48),
        expand_timesteps=True,
    )
    return _saved(pipeline, directory)


def save_ltx(directory: Path) -> Path:
    """An LTX-Video checkpoint laid out for ``LTXConditionPipeline`` (T5 text encoder, a VAE
    with LTX's 8x time / 32x space compression and a timestep-conditioned decoder).

    Registry entry: any ``first_frame``/``last_frame``; canvas sides in 32s."""
    tokenizer = _tokenizer()
    torch.manual_seed(0)
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=TEXT_DIM,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            dropout_rate=0.0,
        )
    )
    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=2,
        caption_channels=TEXT_DIM,
    ).eval()
    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo(
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=True,
        patch_size=4,
        patch_size_t=1,
    ).eval()
    pipeline = LTXConditionPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    return _saved(pipeline, directory)


def _saved(pipeline: Any, directory: Path) -> Path:
    pipeline.save_pretrained(str(directory))
    return directory


def _tokenizer() -> PreTrainedTokenizerFast:
    """A Unigram tokenizer over single characters, with T5's ``</s>`` ending every text."""
    characters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-[]"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(piece, -5.0) for c in characters for piece in (c, "\u2581" + c)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="always"
    )
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
    )


def _umt5(vocab_size: int) -> UMT5EncoderModel:
    torch.manual_seed(0)
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
    )
    return UMT5EncoderModel(config)


def _wan_vae() -> AutoencoderKLWan:
    torch.manual_seed(0)
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ).eval()


def _wan_transformer(
    *,
    in_channels: int,
    out_channels: int,
    image_dim: int | None = None,
    pos_embed_seq_len: int | None = None,
) -> WanTransformer3DModel:
    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=out_channels,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=1024,
        image_dim=image_dim,
        pos_embed_seq_len=pos_embed_seq_len,
    ).eval()


def _unipc() -> UniPCMultistepScheduler:
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )


@contextmanager
def offline_hub() -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` in this process: the variable (for child processes and late
    readers) and the flag ``huggingface_hub`` read from it when first imported."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


def record_decodes(vae: Any, monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Every video ``vae`` decodes from now on, as (1, 3, frames, height, width) in -1..1."""
    decode = vae.decode
    videos: list[torch.Tensor] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        output = decode(*args, **kwargs)
        videos.append(output[0])
        return output

    monkeypatch.setattr(vae, "decode", recording)
    return videos


def record_encodes(vae: Any, monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Every picture or video ``vae`` encodes from now on (the keyframes a pipeline uses)."""
    encode = vae.encode
    inputs: list[torch.Tensor] = []

    def recording(pixels: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        inputs.append(pixels)
        return encode(pixels, *args, **kwargs)

    monkeypatch.setattr(vae, "encode", recording)
    return inputs


def decoded_frame(video: torch.Tensor, index: int) -> npt.NDArray[np.uint8]:
    """Frame ``index`` of a decoded video as RGB, the way the pipelines and engines turn it."""
    frame = video[0, :, index].permute(1, 2, 0).float().numpy()
    return (np.clip(frame / 2 + 0.5, 0, 1) * 255 + 0.5).astype(np.uint8)


class StepLog:
    """An ``on_step`` that records its calls as (done, total)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))


class PipelineCalls:
    """Stands in for an engine's pipeline, recording the keyword arguments of each call and
    passing everything through to the real one."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self.pipeline(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipeline, name)


def record_calls(engine: Any, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every call ``engine`` makes to its pipeline from now on."""
    recorder = PipelineCalls(engine.pipeline)
    monkeypatch.setattr(engine, "pipeline", recorder)
    return recorder.calls
