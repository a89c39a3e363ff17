"""The LLM's input-embedding table alone, read from its safetensors checkpoint.

An engine that does not hold the model in this process (vLLM) still builds soft prompts with
``SoftPromptTable.embed``, which needs the table; this reads that one tensor, not the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def checkpoint_files(path: str) -> list[Path]:
    """The safetensors files of a local folder or a hub id (the files vLLM itself loads)."""
    folder = Path(path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(path, allow_patterns=["*.json", "*.safetensors"]))
    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / shard for shard in shards]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{folder} has no *.safetensors file: backend=vllm reads the input-embedding table "
            "from safetensors (convert the checkpoint, or use backend=hf)"
        )
    return files


def load_input_embeddings(
    path: str, dtype: torch.dtype, device: torch.device, trust_remote_code: bool = False
) -> torch.nn.Embedding:
    """The LLM's input-embedding table alone, read from its safetensors checkpoint.

    The tensor's name comes from the model class itself (built on the meta device, no memory),
    so any architecture transformers knows works, tied embeddings included.
    """
    from accelerate import init_empty_weights
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    weight = skeleton.get_input_embeddings().weight
    names = [name for name, param in skeleton.named_parameters() if param is weight]
    files = checkpoint_files(path)
    for file in files:
        with safe_open(str(file), framework="pt") as tensors:
            keys = set(tensors.keys())
            for name in names:
                # some checkpoints drop the base model's prefix ("model.")
                match = name if name in keys else next((k for k in keys if name.endswith(k)), None)
                if match is not None:
                    table = tensors.get_tensor(match).to(device, dtype)
                    return torch.nn.Embedding.from_pretrained(table, freeze=True)
    raise KeyError(
        f"No tensor named {names} in {[str(f) for f in files]}: cannot find the input-embedding "
        "table for backend=vllm"
    )
