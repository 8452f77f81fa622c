"""A tiny random-weight MiniMax-H3 repository, written in the Hub's layout, fully offline.

``build_tiny_h3(directory)`` writes what ``hf download MiniMaxAI/MiniMax-H3 --local-dir``
would (``modular_model_index.json`` naming the Hub repo, one folder per component), with
every model shrunk to a few hundred thousand parameters. Load it as the engine does:
``ModularPipeline.from_pretrained(directory)`` finds each component's files in the directory.

The geometry the pipeline hard-codes survives the shrink:

* video VAE: 16x spatial, 4x temporal, ``clip_length=17``, ``token_drop=3``, so clips are
  17n+5 frames; with the transformer's (1, 2, 2) patch, canvases are multiples of 32 px;
* audio VAE: hop 800 at 32 kHz (the pipeline assumes 40 latents per second), upsampled
  in 3 stages instead of 7 (a third of the decode time);
* text encoder: 51 Qwen3-VL decoder layers (the pipeline reads ``hidden_states[50]``);
* tokenizer: the Qwen vision tokens (``<|vision_start|>``, ``<|image_pad|>``, ...).

The ``processor/`` folder is written by hand: transformers 5.23 cannot build a
``Qwen3VLProcessor`` without torchvision, which has no CPU build for torch 2.13 here.

Building the audio VAE (and loading it) trips a torch deprecation inside diffusers; tests
that run under "warnings are errors" add ``pytest.mark.filterwarnings(WEIGHT_NORM_WARNING)``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Final

import torch
from diffusers import (
    AutoencoderKLMiniMaxH3,
    AutoencoderKLMiniMaxH3Audio,
    MiniMaxH3Blocks,
    MiniMaxH3Scheduler,
    MiniMaxH3Transformer3DModel,
)
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    Qwen2Tokenizer,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

REPO_ID: Final = "MiniMaxAI/MiniMax-H3"
"""What the index names, as in a ``--local-dir`` copy of the Hub repository."""

WEIGHT_NORM_WARNING: Final = "ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning"
"""The filter for the deprecation the audio VAE's ``weight_norm`` raises when built or loaded."""

VISION_TOKENS: Final = (
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

_CORPUS: Final = (
    "A lighthouse at dusk, waves breaking on the rocks below.",
    "A red fox trotting through a snowy forest, snow crunching underfoot.",
    "A cat walks across a sunny kitchen table and knocks over a glass.",
    "<Picture 1>: <Picture 2>: the quick brown fox jumps over the lazy dog.",
    "Close-up of a woman smiling, natural light. 0123456789 !?.,:;'\"()[]<>-_+=/",
)

TEXT_WIDTH: Final = 32
"""Hidden size of the text encoder, hence of the prompt embeddings the transformer reads."""
_VISION_BUDGET: Final = {"shortest_edge": 32 * 32, "longest_edge": 128 * 128}
"""Keyframes are resized to between 32x32 and 128x128 px worth of patches: a few tokens."""


def build_tiny_h3(directory: Path) -> Path:
    """Write the tiny repository into ``directory`` (created) and return it. About 5 MB."""
    tokenizer = _tokenizer()
    text_encoder = _text_encoder(tokenizer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.nn.utils.weight_norm`", FutureWarning)
        audio_vae = _audio_vae()
    pipeline: Any = MiniMaxH3Blocks().init_pipeline()
    pipeline.update_components(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        transformer=_transformer(),
        transformer_ref=_transformer(),
        vae=_vae(),
        audio_vae=audio_vae,
        scheduler=MiniMaxH3Scheduler(shift=12.0),
        audio_scheduler=MiniMaxH3Scheduler(shift=3.0),
    )
    pipeline.save_pretrained(str(directory), overwrite_modular_index=True)
    _write_processor(directory / "processor", tokenizer)
    _name_the_hub_repo(directory / "modular_model_index.json")
    return directory


def _tokenizer() -> Qwen2Tokenizer:
    """A byte-level BPE (vocabulary 512) trained on a few sentences, in Qwen2's layout."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        min_frequency=1,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(_CORPUS) * 4, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    # The backend takes (left, right) pairs, though the hint says strings.
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges)  # type: ignore[arg-type]
    tokenizer.add_tokens(list(VISION_TOKENS), special_tokens=True)
    return tokenizer


def _text_encoder(tokenizer: Qwen2Tokenizer) -> Qwen3VLForConditionalGeneration:
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": TEXT_WIDTH,
            "intermediate_size": 2 * TEXT_WIDTH,
            "num_hidden_layers": 51,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": [4, 2, 2],
                "mrope_interleaved": True,
            },
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": TEXT_WIDTH,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=_token_id(tokenizer, "<|image_pad|>"),
        video_token_id=_token_id(tokenizer, "<|video_pad|>"),
        vision_start_token_id=_token_id(tokenizer, "<|vision_start|>"),
        vision_end_token_id=_token_id(tokenizer, "<|vision_end|>"),
    )
    torch.manual_seed(0)
    return Qwen3VLForConditionalGeneration(config)


def _token_id(tokenizer: Qwen2Tokenizer, token: str) -> int:
    value = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(value, int)
    return value


def _transformer() -> MiniMaxH3Transformer3DModel:
    torch.manual_seed(1)
    model: MiniMaxH3Transformer3DModel = MiniMaxH3Transformer3DModel(
        num_attention_heads=2,
        attention_head_dim=32,
        hidden_size=32,
        num_layers=2,
        num_refiner_layers=1,
        ffn_dim=64,
        in_channels=4,
        audio_in_channels=8,
        patch_size=(1, 2, 2),
        text_dim=TEXT_WIDTH,
        freq_dim=32,
        time_embed_hidden_dim=32,
        time_embed_dim=16,
        rope_freq_dim=4,  # 3 axes x 2 x 4 must fit in attention_head_dim
    )
    return model


def _vae() -> AutoencoderKLMiniMaxH3:
    torch.manual_seed(2)
    model: AutoencoderKLMiniMaxH3 = AutoencoderKLMiniMaxH3(
        latent_channels=4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        spatial_downsample_factors=(2, 2, 2, 2),
        temporal_downsample_factors=(1, 2, 2, 1),
        norm_num_groups=8,
        decoder_num_layers=1,
        decoder_num_attention_heads=2,
        decoder_attention_head_dim=8,
        decoder_num_register_tokens=2,
        decoder_ffn_mult=2,
        clip_length=17,
        token_drop=3,
        latents_mean=(0.0,) * 4,
        latents_std=(1.0,) * 4,
    )
    return model


def _audio_vae() -> AutoencoderKLMiniMaxH3Audio:
    torch.manual_seed(3)
    model: AutoencoderKLMiniMaxH3Audio = AutoencoderKLMiniMaxH3Audio(
        encoder_dim=2,
        encoder_rates=(2, 4, 4, 5, 5),  # hop 800
        latent_dim=32,
        latent_channels=8,
        num_attention_heads=2,
        decoder_dim=8,  # halved by each upsampling stage: 3 stages (the release has 7)
        decoder_rates=(8, 10, 10),  # hop 800
        decoder_kernel_sizes=(16, 20, 20),
        resblock_kernel_sizes=(3,),
        resblock_dilation_sizes=((1, 3),),
        sampling_rate=32000,
        latents_mean=[0.0] * 8,  # None breaks the decode
        latents_std=[1.0] * 8,
    )
    return model


def _write_processor(folder: Path, tokenizer: Qwen2Tokenizer) -> None:
    """What ``Qwen3VLProcessor.save_pretrained`` writes: the tokenizer's files and one
    ``processor_config.json`` holding the image and video processors' settings."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    image = Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, temporal_patch_size=2, size=_VISION_BUDGET
    )
    config = {
        "processor_class": "Qwen3VLProcessor",
        "image_processor": json.loads(image.to_json_string()),
        "video_processor": {
            "patch_size": 16,
            "merge_size": 2,
            "temporal_patch_size": 2,
            "video_processor_type": "Qwen3VLVideoProcessor",
            "size": {"shortest_edge": 32 * 32, "longest_edge": 4 * 128 * 128},
        },
    }
    (folder / "processor_config.json").write_text(json.dumps(config, indent=2))


def _name_the_hub_repo(index: Path) -> None:
    """Point every component at the Hub repository, as the published index does; the
    pipeline loads each one whose files are present from the local directory instead."""
    entries = json.loads(index.read_text())
    for entry in entries.values():
        if isinstance(entry, list) and entry[2].get("pretrained_model_name_or_path"):
            entry[2]["pretrained_model_name_or_path"] = REPO_ID
    entries["processor"] = [
        "transformers",
        "Qwen3VLProcessor",
        {
            "pretrained_model_name_or_path": REPO_ID,
            "revision": None,
            "subfolder": "processor",
            "type_hint": ["transformers", "Qwen3VLProcessor"],
            "variant": None,
        },
    ]
    index.write_text(json.dumps(entries, indent=2, sort_keys=True))
