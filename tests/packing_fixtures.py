"""Helpers of the packing tests (no tests here): generated chat records, a small byte-level BPE tokenizer
trained here (ChatML template with generation markers, about 400 ids, so tiny models have tiny vocabularies
and the job's ids are used as they are), processor folders on it (LLaVA, Qwen2-VL), tiny randomly
initialised models built from configs, and per-sequence reference computations.
"""
from __future__ import annotations

import atexit
import functools
import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np

WORDS = ("alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega river stone cloud light "
         "paper glass music table garden").split()
CHAT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_SPECIALS = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
IGNORE = -100


def _tempdir(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def chat_records(seed: int, n: int, *, words: int = 40, image: str | None = None, every: int = 2) -> list[dict]:
    """``n`` records of 1-3 exchanges of random words (and a last record without an assistant turn, which
    the job rejects). With ``image``, every ``every``-th record asks about it (``<image>`` + ``images``)."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        messages = []
        for turn in range(rng.choice((1, 1, 2, 3))):
            question = " ".join(rng.choices(WORDS, k=rng.randint(1, 30)))
            if image is not None and turn == 0 and i % every == 0:
                question = "<image>" + question
            messages.append({"role": "user", "content": question})
            messages.append({"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(1, words)))})
        record = {"messages": messages}
        if image is not None and i % every == 0:
            record["images"] = [image]
        records.append(record)
    records.append({"messages": [{"role": "user", "content": "hi"}]})  # no assistant turn: rejected
    return records


def write_jsonl(path: Path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def small_tokenizer(extra_specials=()):
    """A byte-level BPE tokenizer trained on the test words (vocabulary about 400), ChatML specials, the
    bundled ChatML template with generation markers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from transforms.tokenizer_loading import read_template

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    corpus = [" ".join(WORDS), "system user assistant You are Qwen, created by Alibaba Cloud. "
              "You are a helpful assistant.", "hi"] * 10
    backend.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=CHAT_SPECIALS + list(extra_specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=read_template("chatml_generation.jinja"))


@functools.lru_cache(maxsize=None)
def small_tokenizer_dir() -> str:
    folder = _tempdir("small_tokenizer_")
    small_tokenizer().save_pretrained(str(folder))
    return str(folder)


@functools.lru_cache(maxsize=None)
def small_qwen_dir() -> str:
    """A Qwen2-VL processor folder (PIL image processor, 56*56..28*28*64 pixels) on the small tokenizer."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    folder = _tempdir("small_qwen_processor_")
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=28 * 28 * 64).save_pretrained(str(folder))
    small_tokenizer(QWEN_SPECIALS).save_pretrained(str(folder))
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2VLProcessor"}))
    return str(folder)


@functools.lru_cache(maxsize=None)
def small_llava_dir() -> str:
    """A LLaVA processor folder (CLIP image processor, 224 crop, patch 14: 256 image tokens per image; here
    crop 56, so 16) on the small tokenizer with ``<image>``."""
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = _tempdir("small_llava_processor_")
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    LlavaProcessor(image_processor=image_processor, tokenizer=small_tokenizer(["<image>"]), patch_size=14,
                   vision_feature_select_strategy="default", num_additional_image_tokens=1
                   ).save_pretrained(str(folder))
    return str(folder)


def write_png(path: Path, size=(60, 45), seed: int = 0) -> str:
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(str(path), format="PNG")
    return str(path)


def run_job(args: list[str]) -> int:
    """``python -m pipeline`` in-process, the default command (local engine)."""
    from pipeline.launch.main import main

    return main(list(args))


# -- tiny models ------------------------------------------------------------------------------------

def tiny_causal_lm(arch: str, vocab_size: int, attn: str, seed: int = 0):
    """A randomly initialised 2-layer Llama or Qwen2 causal LM (hidden 32), eval mode, float32. Weights drawn
    wider than the default (0.2) and RoPE base 10, so a wrong position or a crossed mask moves the logits
    far beyond float error."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM),
                                 "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    config = config_class(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                          tie_word_embeddings=True, attn_implementation=attn, initializer_range=0.2,
                          rope_parameters={"rope_type": "default", "rope_theta": 10.0})
    return model_class(config).eval()


def token_losses(logits, labels):
    """Per-position loss of a causal LM (position t predicts labels[t + 1]); 0 where the label is -100."""
    import torch

    return torch.nn.functional.cross_entropy(logits[:-1].float(), labels[1:].long(), ignore_index=IGNORE,
                                             reduction="none")


def sequences_of(batch, dataset_rows, padding_free: bool):
    """``[(row, start, length)]``: where every sequence of the collated batch sits (padded: in row ``row``;
    padding-free: in the one flat row)."""
    out = []
    offset = 0
    for b, row in enumerate(dataset_rows):
        start = 0
        for length in np.asarray(row["seq_lengths"]).tolist():
            out.append((0, offset + start, length) if padding_free else (b, start, length))
            start += length
        offset += start
    return out
