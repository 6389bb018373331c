"""The tiny randomly initialised model both training examples use (no download)."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from transforms.runtime import ShardDataset


def tiny_llama(ds: ShardDataset) -> LlamaForCausalLM:
    """A 2-layer, 64-wide Llama whose vocabulary covers every id in the dataset."""
    tok = ds.tokenizer_info
    special = [t for t in (tok.get("pad_token_id"), tok.get("eos_token_id"), tok.get("bos_token_id")) if t is not None]
    largest_id = max([int(v.max()) for v in ds.flat_values() if len(v)] + special)
    vocab_size = max(tok.get("vocab_size") or 0, largest_id + 1)  # the job's manifest records vocab_size
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=int(ds.lengths.max()),
        pad_token_id=tok.get("pad_token_id"), eos_token_id=tok.get("eos_token_id"),
        bos_token_id=tok.get("bos_token_id"),
        # training needs no KV cache; without one, transformers also finds the sequence boundaries of
        # padding-free batches from position_ids under sdpa/eager attention
        use_cache=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)
