"""DEP steps 6-7 (dep_eval/dep/module.py) and checkpoints (dep_eval/checkpoint.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dep_eval.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from dep_eval.dep.module import DEPConfig, DEPModule

D, H, K = 384, 576, 8


def module(seed: int = 0, **kwargs) -> DEPModule:
    torch.manual_seed(seed)
    return DEPModule(DEPConfig(**kwargs))


def inputs(batch: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    his = F.normalize(torch.randn(batch, K, D, generator=g), dim=-1)
    diff = 0.3 * torch.randn(batch, K, D, generator=g)
    return his, diff


def test_shapes_and_reference_losses_when_all_slots_present() -> None:
    dep = module()
    his, diff = inputs()
    out = dep(his, diff)
    assert out.his.shape == (3, K, H) and out.diff.shape == (3, K, H)
    assert out.z.shape == (3, 2 * K, 512)
    # The reference's SAE losses (everything present): smooth-L1 over all elements,
    # rho_hat = mean of z over the 2K tokens, KL averaged.
    x = torch.cat([his, diff], dim=1)
    z = F.gelu(dep.sae.encoder(x))
    x_recon = F.gelu(dep.sae.decoder(z))
    assert torch.allclose(out.recon_loss, F.smooth_l1_loss(x, x_recon), atol=1e-7)
    rho_hat = z.mean(dim=1).clamp(1e-6, 1 - 1e-6)
    kl = 0.05 * torch.log(0.05 / rho_hat) + 0.95 * torch.log(0.95 / (1 - rho_hat))
    assert torch.allclose(out.kl_loss, kl.mean(), atol=1e-6)
    assert torch.allclose(out.aux_loss, 100 * (out.recon_loss + 1e-3 * out.kl_loss))
    # Separate aligners: his codes through align_his, diff codes through align_diff.
    assert torch.allclose(out.his, dep.align_his(z[:, :K]), atol=1e-6)
    assert torch.allclose(out.diff, dep.align_diff(z[:, K:]), atol=1e-6)


def test_masked_slots_are_ignored() -> None:
    dep = module()
    his, diff = inputs()
    his_mask = torch.ones(3, K, dtype=torch.bool)
    diff_mask = torch.ones(3, K, dtype=torch.bool)
    his_mask[0, 5:] = False
    diff_mask[0, 5:] = False
    diff_mask[1] = False  # cold start: his only
    out = dep(his, diff, his_mask, diff_mask)
    # Garbage in absent slots changes nothing.
    his2, diff2 = his.clone(), diff.clone()
    his2[0, 5:] = 1e3
    diff2[0, 5:] = -1e3
    diff2[1] = 7.0
    out2 = dep(his2, diff2, his_mask, diff_mask)
    for name in ("recon_loss", "kl_loss", "aux_loss", "his", "diff"):
        assert torch.allclose(getattr(out, name), getattr(out2, name), atol=1e-6), name
    assert not out.his[0, 5:].any() and not out.diff[1].any()
    # And the losses equal those over the present tokens only.
    x = torch.cat([his, diff], dim=1)
    mask = torch.cat([his_mask, diff_mask], dim=1)
    z, x_recon = dep.sae(x)
    present = F.smooth_l1_loss(x_recon[mask], x[mask])
    assert torch.allclose(out.recon_loss, present, atol=1e-7)


def test_everything_masked_gives_zero_losses_not_nan() -> None:
    dep = module()
    his, diff = inputs(batch=2)
    none = torch.zeros(2, K, dtype=torch.bool)
    out = dep(his, diff, none, none)
    assert out.recon_loss.item() == 0 and out.kl_loss.item() == 0
    assert not out.his.any() and not out.diff.any()
    out.aux_loss.backward()  # still differentiable, no NaN
    assert all(torch.isfinite(p.grad).all() for p in dep.parameters() if p.grad is not None)


def test_sae_learns_on_real_embeddings(shared_data_dir: Path) -> None:
    """A few steps on REAL his/diff vectors (all-MiniLM-L6-v2 over the shared data) lower
    the auxiliary loss. The aux loss trains the SAE; the aligners learn from the LM loss
    (checked with a stand-in loss on their outputs)."""
    from dep_eval.data.loaders import load_pool, load_split, local_source
    from dep_eval.dep.embeddings import DifferenceEmbedder
    from dep_eval.encoder import CachedEncoder

    source = local_source(shared_data_dir / "amazon_beauty")
    samples = load_split(source, "All_Beauty", "test")[:32]
    batch = DifferenceEmbedder(CachedEncoder(dim=384), load_pool(source, "All_Beauty"))(samples)
    dep = module()
    optimizer = torch.optim.AdamW(dep.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        out = dep(batch.his, batch.diff, batch.his_mask, batch.diff_mask)
        optimizer.zero_grad()
        out.aux_loss.backward()
        assert all(p.grad is not None for p in dep.sae.parameters())
        optimizer.step()
        losses.append(out.aux_loss.item())
    assert losses[-1] < 0.5 * losses[0]
    dep.zero_grad()
    out = dep(batch.his, batch.diff, batch.his_mask, batch.diff_mask)
    (out.his.square().mean() + out.diff.square().mean() + out.aux_loss).backward()
    assert all(p.grad is not None and p.grad.any() for p in dep.parameters())


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="rho"):
        DEPConfig(rho=1.5)
    with pytest.raises(ValueError, match="soft_tokens"):
        DEPConfig(k=4, soft_tokens={"his": ["a"], "diff": ["b"], "markers": []})
    assert DEPConfig(k=4).soft_tokens["diff"] == [f"[DIFF_TOKEN_{i}]" for i in range(4)]
    with pytest.raises(ValueError, match="384-d"):
        module()(torch.zeros(1, K, 10), torch.zeros(1, K, 10))


# ------------------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    dep = module(seed=3, k=4)
    folder = save_checkpoint(dep, tmp_path / "ckpt", extra={"epoch": 2})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION == 2 and meta["extra"] == {"epoch": 2}
    assert meta["config"]["encoder_dim"] == 384 and meta["config"]["llm_hidden_size"] == 576
    assert meta["config"]["soft_tokens"]["his"][0] == "[HIS_TOKEN_0]"
    # Megabytes: only what DEP trains.
    assert (folder / "model.safetensors").stat().st_size < 20 * 2**20
    loaded = load_checkpoint(
        DEPModule,
        folder,
        encoder_name="sentence-transformers/all-MiniLM-L6-v2",
        encoder_dim=384,
        llm_name="HuggingFaceTB/SmolLM2-135M-Instruct",
        llm_hidden_size=576,
        k=4,
    )
    his, diff = torch.randn(2, 4, D), torch.randn(2, 4, D)
    a, b = dep(his, diff), loaded(his, diff)
    assert torch.equal(a.his, b.his) and torch.equal(a.diff, b.diff)
    assert read_config(DEPModule, folder) == dep.config


def test_checkpoint_overwrite_is_atomic_and_leaves_no_debris(tmp_path: Path) -> None:
    save_checkpoint(module(seed=1), tmp_path / "ckpt")
    second = module(seed=2)
    save_checkpoint(second, tmp_path / "ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    loaded = load_checkpoint(DEPModule, tmp_path / "ckpt")
    assert torch.equal(loaded.sae.encoder.weight, second.sae.encoder.weight)


@pytest.mark.bad_input("checkpoint-mismatch")
def test_checkpoint_mismatch_messages(tmp_path: Path) -> None:
    folder = save_checkpoint(module(), tmp_path / "ckpt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(
            DEPModule, folder, llm_name="Qwen/Qwen2.5-7B-Instruct", llm_hidden_size=3584
        )
    assert (
        "checkpoint was trained for LLM hidden size 576 (HuggingFaceTB/SmolLM2-135M-Instruct) "
        "but the loaded LLM has 3584 (Qwen/Qwen2.5-7B-Instruct)" in str(info.value)
    )
    with pytest.raises(CheckpointError, match="trained on 384-d embeddings .* gives 1024-d"):
        load_checkpoint(DEPModule, folder, encoder_name="BAAI/bge-m3", encoder_dim=1024)
    with pytest.raises(CheckpointError, match="encoder 'all-MiniLM-L6-v2' but the encoder is"):
        load_checkpoint(DEPModule, folder, encoder_name="some/other-384d-model", encoder_dim=384)
    with pytest.raises(CheckpointError, match="8 history slots"):
        load_checkpoint(DEPModule, folder, k=4)
    with pytest.raises(CheckpointError, match="LLM 'HuggingFaceTB"):
        load_checkpoint(
            DEPModule, folder, llm_name="other/llm", llm_hidden_size=576, strict_llm_name=True
        )


@pytest.mark.bad_input(
    "checkpoint-corrupt", "checkpoint-config-missing", "checkpoint-format-version"
)
def test_checkpoint_corruption_is_reported(tmp_path: Path) -> None:
    folder = save_checkpoint(module(), tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(DEPModule, folder)
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_checkpoint(DEPModule, tmp_path)
    # Config and weights that disagree: say which tensors.
    other = save_checkpoint(module(), tmp_path / "other")
    meta = json.loads((other / "config.json").read_text())
    meta["config"]["sae_dim"] = 256
    (other / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"sae.encoder.weight has shape \(512, 384\)"):
        load_checkpoint(DEPModule, other)
    meta["format_version"] = 99
    (other / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(DEPModule, other)


def test_no_pickle_loading_anywhere_in_the_package() -> None:
    root = Path(__file__).parents[1]
    for path in [
        *root.joinpath("dep_eval").rglob("*.py"),
        *root.joinpath("baselines").rglob("*.py"),
    ]:
        text = path.read_text()
        for banned in ("torch.load(", "import pickle", "allow_pickle=True", "np.load("):
            assert banned not in text, (path, banned)
