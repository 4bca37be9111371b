"""IISAN / IISAN-Versa and the PEFT baselines, on tiny random encoders and planted patterns (CPU, fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalrec.data.interactions import Interactions
from modalrec.data.sequences import TrainWindows, history_batch
from modalrec.errors import ConfigError, MismatchError
from modalrec.models.base import ModelContext
from modalrec.models.iisan.adapters import AdapterBlock, Gate, InterSAN, IntraSAN, layerdrop_layers
from modalrec.models.iisan.model import IISAN, IISANConfig, LayerStates, efficiency_report
from modalrec.models.iisan.peft_baselines import (
    EncoderFinetune,
    EncoderFinetuneConfig,
    FrozenBackbone,
    FrozenBackboneConfig,
    LoRALinear,
    apply_lora,
    tokenize_items,
)
from modalrec.training.loop import TrainConfig, fit

# ---- LayerDrop ------------------------------------------------------------------------------------


def test_layerdrop_symmetric_keeps_every_second_layer_ending_at_the_last():
    assert layerdrop_layers(12, 12) == ([2, 4, 6, 8, 10, 12], [2, 4, 6, 8, 10, 12])
    assert layerdrop_layers(12) == ([2, 4, 6, 8, 10, 12], [])
    assert layerdrop_layers(6) == ([2, 4, 6], [])  # MiniLM-L6, text only
    assert layerdrop_layers(5) == ([1, 3, 5], [])
    assert layerdrop_layers(12, 12, n_blocks=3) == ([4, 8, 12], [4, 8, 12])
    assert layerdrop_layers(4, 4, mode="all") == ([1, 2, 3, 4], [1, 2, 3, 4])


def test_layerdrop_asymmetric_group_selection():
    # largest k with L_text - k * L_image / 2 >= 1; 6 + 6 evenly spaced blocks ending at the last layer
    assert layerdrop_layers(28, 12) == ([8, 12, 16, 20, 24, 28], [2, 4, 6, 8, 10, 12])  # k = 4
    assert layerdrop_layers(32, 12) == ([7, 12, 17, 22, 27, 32], [2, 4, 6, 8, 10, 12])  # k = 5
    assert layerdrop_layers(24, 12) == ([9, 12, 15, 18, 21, 24], [2, 4, 6, 8, 10, 12])  # k = 3
    assert layerdrop_layers(6, 12) == ([2, 4, 6], [6, 9, 12])  # shallower text: the image side is grouped
    for lt, li in ((28, 12), (32, 12), (40, 24)):
        text, image = layerdrop_layers(lt, li)
        k = text[1] - text[0]
        assert lt - k * li / 2 >= 1 and lt - (k + 1) * li / 2 < 1  # k is the largest admissible stride
        assert len(text) == len(image) == li // 2 and text[-1] == lt and image[-1] == li


def test_layerdrop_explicit_and_errors():
    assert layerdrop_layers(28, 12, text_select=[1, 5, 28], image_select=[4, 8, 12]) == ([1, 5, 28], [4, 8, 12])
    with pytest.raises(ConfigError, match="pair up"):
        layerdrop_layers(28, 12, text_select=[1, 5, 28])  # 3 text blocks vs 6 image blocks
    with pytest.raises(ConfigError, match="1..12"):
        layerdrop_layers(12, text_select=[0, 4])  # layer 0 is the chain start, not a block
    with pytest.raises(ConfigError, match="increasing"):
        layerdrop_layers(12, text_select=[4, 2])
    with pytest.raises(ConfigError, match="equal depths"):
        layerdrop_layers(28, 12, mode="symmetric")
    with pytest.raises(ConfigError, match="mode"):
        layerdrop_layers(12, mode="every-third")


# ---- gates and blocks -----------------------------------------------------------------------------


def test_gate_starts_at_its_init_and_follows_the_sigmoid_gradient():
    for init in (0.1, 0.5, 0.9):
        gate = Gate(init)
        value = gate()
        value.backward()
        assert abs(float(value.detach()) - init) < 1e-6
        assert abs(float(gate.logit.grad) - init * (1 - init)) < 1e-6  # d sigmoid / d logit
    for bad in (0.0, 1.0):
        with pytest.raises(ConfigError, match="strictly inside"):
            Gate(bad)


def test_intra_san_matches_reference_recursion():
    torch.manual_seed(0)
    san = IntraSAN(dim=8, n_blocks=3, bottleneck=4)
    for b in san.blocks:  # non-trivial blocks (the up-projection starts at zero)
        torch.nn.init.normal_(b.up.weight, std=0.3)
    with torch.no_grad():
        for g, mu in zip(san.gates, (0.2, 0.7, 0.9)):
            g.logit.fill_(float(torch.logit(torch.tensor(mu))))
    h = torch.randn(5, 4, 8)  # [N, 1 + 3 blocks, d]
    x = h[:, 0]
    for i, mu in enumerate((0.2, 0.7, 0.9)):
        b = san.blocks[i]
        z = mu * h[:, i + 1] + (1 - mu) * x
        x = z + b.up(torch.nn.functional.gelu(b.down(z)))
    torch.testing.assert_close(san(h), x)
    assert san.gate_values() == pytest.approx([0.2, 0.7, 0.9])


def test_adapter_block_is_identity_at_init_and_inter_san_projects_text():
    x = torch.randn(3, 16)
    torch.testing.assert_close(AdapterBlock(16, 4)(x), x)
    inter = InterSAN(text_dim=24, image_dim=16, n_blocks=2, bottleneck=4)
    assert isinstance(inter.transform, torch.nn.Linear) and inter.transform.in_features == 24
    out = inter(torch.randn(3, 3, 24), torch.randn(3, 3, 16))
    assert out.shape == (3, 16)
    assert isinstance(InterSAN(16, 16, 2, 4).transform, torch.nn.Identity)  # symmetric: X_i = text state


# ---- data helpers ---------------------------------------------------------------------------------


def _cycle_data(n_items: int, n_users: int, length: int, seed: int) -> Interactions:
    """Every user walks the item cycle i -> i % n + 1 from a random start: the next item is planted."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(1, n_users + 1):
        start = int(rng.integers(1, n_items + 1))
        users += [u] * length
        items += [(start - 1 + t) % n_items + 1 for t in range(length)]
    return Interactions.from_arrays(np.array(users), np.array(items), n_users=n_users, n_items=n_items)


def _ctx(inter: Interactions, max_len: int) -> ModelContext:
    return ModelContext(n_items=inter.n_items, n_users=inter.n_users,
                        train_item_counts=inter.item_counts(), seed=0)


def _successor_hits(model, n_items: int, k: int = 5) -> float:
    """Share of items whose successor is in the model's top k after a 3-item history along the cycle."""
    hist = [np.array([(i - 3 + t) % n_items + 1 for t in range(3)]) for i in range(1, n_items + 1)]
    model.eval()
    with torch.no_grad():
        scores = model.score(history_batch(hist, 8))[:, 1:]  # [n, n]
    succ = torch.tensor([(i) % n_items for i in range(1, n_items + 1)])  # column of item i % n + 1
    top = scores.topk(k, dim=1).indices
    return float((top == succ[:, None]).any(1).float().mean())


# ---- the adapter trains on the cache; encoders are never called --------------------------------


@pytest.fixture(scope="module")
def tiny_encoders(tmp_path_factory):
    """A real tiny random BERT (text, 4 layers, 48-d) and CLIP vision tower (image, 2 layers, 32-d)."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("PIL")
    from PIL import Image

    from modalrec.features.encoders.image import HFVisionEncoder
    from modalrec.features.encoders.text import HFTextEncoder

    text = HFTextEncoder(
        transformers.BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=4, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64),
        tokenizer="minilm", seed=0,
    )
    image = HFVisionEncoder(
        transformers.CLIPVisionConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=64),
        pooling="mean", seed=0,
    )
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(24):
        p = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return text, image, paths


def _encoder_states(encoder, inputs, depth: int) -> LayerStates:
    layers = list(range(depth + 1))
    enc = encoder.encode_hidden(inputs, layers)  # [n, L + 1, d]
    pad = np.zeros((1, *enc.features.shape[1:]), dtype=np.float32)
    missing = torch.as_tensor(np.concatenate([[True], enc.missing]))
    return LayerStates(np.concatenate([pad, enc.features]), layers, depth, missing)


def test_iisan_trains_on_cached_states_without_calling_encoders(tiny_encoders, tmp_path):
    from modalrec.data.items import ItemTable
    from modalrec.data.vocab import Vocabulary
    from modalrec.features.build import encode_hidden_cache
    from modalrec.features.hidden_cache import HiddenStateCache
    from modalrec.models.iisan.model import states_from_cache

    text_enc, image_enc, paths = tiny_encoders
    n = 24
    vocab = Vocabulary([f"i{i}" for i in range(n)])
    titles = [""] + [f"item {i} widget {'abc'[i % 3]}" for i in range(n)]
    items = ItemTable(vocab, {"title": titles}, [None, *paths])
    encode_hidden_cache(items, tmp_path / "hidden", {"text": text_enc, "image": image_enc}, layers="all",
                        template={"text": "{title}"}, device="cpu", progress=False)
    cache = HiddenStateCache.open(tmp_path / "hidden", vocab)
    states = states_from_cache(cache)
    assert states["text"].depth == 4 and states["image"].depth == 2 and states["text"].layers == [0, 1, 2, 3, 4]
    calls = {"n": 0}

    def count(*_args):
        calls["n"] += 1

    hooks = [text_enc.module.register_forward_hook(count), image_enc.module.register_forward_hook(count)]
    try:
        inter = _cycle_data(n, 40, 8, seed=1)
        cfg = IISANConfig(dim=16, n_heads=2, n_layers=1, max_len=8, bottleneck=8, dropout=0.0)
        model = IISAN.build(cfg, _ctx(inter, 8), states)
        # asymmetric depths 4 / 2 -> group LayerDrop: image [2], text k = 3 -> [4]
        assert (model.tower.text_layers, model.tower.image_layers) == ([4], [2])
        assert model.tower.has_inter and isinstance(model.tower.inter_san.transform, torch.nn.Linear)
        hist = fit(model, TrainWindows(inter, 8), TrainConfig(epochs=3, batch_size=16, lr=5e-2, progress=False))
        model.eval()
        with torch.no_grad():
            scores = model.score(history_batch([np.array([1, 2, 3])], 8))
        assert scores.shape == (1, n + 1) and bool(torch.isfinite(scores).all())
        assert calls["n"] == 0, "an encoder ran during IISAN training / scoring"
        text_enc.encode(["probe"])  # the hooks do see a real encoder call
        assert calls["n"] == 1
    finally:
        for h in hooks:
            h.remove()
    assert hist.epochs == 3
    assert any(abs(v - 0.5) > 1e-4 for v in model.tower.gate_values()["text_mu"])  # the gates did train
    report = efficiency_report(model, seconds_per_epoch=hist.epoch_seconds[-1])
    encoder_params = sum(p.numel() for p in text_enc.module.parameters())
    assert 0 < report["trainable_parameters"] < encoder_params
    assert report["layers"] == {"text": [4], "image": [2]}


def test_iisan_learns_a_planted_next_item_pattern_text_only():
    n, depth, d = 30, 6, 32
    g = torch.Generator().manual_seed(0)
    # Item identity lives in the LAST layer only; lower layers are shared noise (uninformative).
    hidden = torch.randn(1, depth + 1, d, generator=g).expand(n + 1, -1, -1).clone()
    hidden[:, depth] = torch.randn(n + 1, d, generator=g)
    hidden[0] = 0
    states = {"text": LayerStates(hidden, list(range(depth + 1)), depth)}
    inter = _cycle_data(n, 80, 10, seed=2)
    cfg = IISANConfig(dim=32, n_heads=2, n_layers=1, max_len=8, bottleneck=16, dropout=0.0, adapter_dropout=0.0)
    model = IISAN.build(cfg, _ctx(inter, 8), states)
    assert model.tower.text_layers == [2, 4, 6] and not model.tower.has_image
    chance = _successor_hits(model, n)
    hist = fit(model, TrainWindows(inter, 8), TrainConfig(epochs=25, batch_size=32, lr=1e-2, progress=False))
    assert hist.train_loss[-1] < 0.5 * hist.train_loss[0]
    assert _successor_hits(model, n) >= 0.8 > chance + 0.3
    assert model.tower.gate_values()["text_mu"][-1] > 0.5  # the informative last layer gained weight


def test_iisan_shape_and_row_checks():
    inter = _cycle_data(10, 5, 4, seed=0)
    bad = {"text": LayerStates(torch.zeros(7, 3, 8), [0, 1, 2], 2)}
    with pytest.raises(MismatchError, match="rows"):
        IISAN.build(IISANConfig(dim=8, n_heads=1, max_len=4), _ctx(inter, 4), bad)
    with pytest.raises(MismatchError, match="layer 0"):
        LayerStates(torch.zeros(11, 2, 8), [1, 2], 2)
    partial = {"text": LayerStates(torch.zeros(11, 3, 8), [0, 1, 2], 4)}  # cache lacks layer 4
    with pytest.raises(MismatchError, match="not in the hidden-state cache"):
        IISAN.build(IISANConfig(dim=8, n_heads=1, max_len=4), _ctx(inter, 4), partial)
    with pytest.raises(ConfigError, match="text"):
        IISAN.build(IISANConfig(dim=8, n_heads=1, max_len=4), _ctx(inter, 4), {})


# ---- baselines ----------------------------------------------------------------------------------


def test_lora_linear_starts_at_base_and_trains_only_low_rank_factors():
    base = torch.nn.Linear(12, 6)
    lora = LoRALinear(base, r=2, alpha=4.0)
    x = torch.randn(5, 12)
    torch.testing.assert_close(lora(x), base(x))  # B = 0 at init
    assert [n for n, p in lora.named_parameters() if p.requires_grad] == ["lora_a", "lora_b"]
    with torch.no_grad():
        lora.lora_b.normal_()
    torch.testing.assert_close(lora(x), x @ lora.merged_weight().T + base.bias)
    module = torch.nn.Sequential()
    module.add_module("query", torch.nn.Linear(4, 4))
    module.add_module("other", torch.nn.Linear(4, 4))
    assert apply_lora(module, ("query",), r=2) == ["query"]
    assert isinstance(module.query, LoRALinear) and not module.other.weight.requires_grad
    with pytest.raises(ConfigError, match="match no"):
        apply_lora(torch.nn.Sequential(torch.nn.Linear(2, 2)), ("q_proj",))


def test_baselines_train_and_rank_their_trainable_parameters(tiny_encoders):
    import copy

    text_enc, _, _ = tiny_encoders
    n = 24
    titles = [""] + [f"item {i} widget" for i in range(n)]
    inter = _cycle_data(n, 20, 6, seed=3)
    ctx = _ctx(inter, 6)
    ids, mask = tokenize_items(text_enc.tokenizer, titles, max_tokens=12)
    states = {"text": _encoder_states(text_enc, titles[1:], 4)}
    batch = next(iter(TrainWindows(inter, 6).batches(8, seed=0, epoch=1)))
    counts = {}
    base_cfg = {"dim": 16, "n_heads": 2, "n_layers": 1, "max_len": 6, "dropout": 0.0}
    for name, model in {
        "iisan": IISAN.build(IISANConfig(**base_cfg, bottleneck=8), ctx, states),
        "frozen": FrozenBackbone.build(FrozenBackboneConfig(**base_cfg), ctx, states),
        "full": EncoderFinetune.build(EncoderFinetuneConfig(**base_cfg, mode="full", encoder_lr_scale=0.1), ctx,
                                      copy.deepcopy(text_enc.module), ids, mask),
        "lora": EncoderFinetune.build(EncoderFinetuneConfig(**base_cfg, mode="lora", lora_r=2), ctx,
                                      copy.deepcopy(text_enc.module), ids, mask),
    }.items():
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        losses = []
        for _ in range(5):  # repeated steps on one batch: the loss must go down
            loss = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        assert losses[-1] < losses[0], name
        model.eval()
        with torch.no_grad():
            assert model.score(history_batch([np.array([1, 2])], 6)).shape == (1, n + 1)
        counts[name] = model.num_trainable_parameters()
        scaled = {n for n, p in model.named_parameters() if getattr(p, "lr_scale", 1.0) != 1.0}
        assert scaled == ({n for n in scaled if n.startswith("tower.encoder.")} if name == "full" else set()), name
        if name == "full":  # the pretrained encoder at lr x 0.1, the item projection and SASRec at lr
            assert len(scaled) == len(list(model.tower.encoder.parameters()))
    # Known answers: the frozen baseline trains SASRec plus a 48 -> 16 projection, like the encoder towers;
    # full fine-tuning adds every encoder weight, LoRA r=2 on query and value (4 layers, 48 -> 48) adds
    # 8 x 2 x (48 + 48) factors, and IISAN's adapters are far fewer than the encoder's weights.
    encoder_params = sum(p.numel() for p in text_enc.module.parameters())
    assert counts["full"] == counts["frozen"] + encoder_params
    assert counts["lora"] == counts["frozen"] + 8 * 2 * (48 + 48)
    assert counts["frozen"] < counts["iisan"] < counts["frozen"] + encoder_params // 2


def test_pretrained_encoder_weights_survive_sasrec_init(tiny_encoders):
    import copy

    text_enc, _, _ = tiny_encoders
    enc = copy.deepcopy(text_enc.module)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    inter = _cycle_data(8, 4, 4, seed=0)
    ids, mask = tokenize_items(text_enc.tokenizer, [""] + [f"t{i}" for i in range(8)], max_tokens=6)
    EncoderFinetune.build(EncoderFinetuneConfig(dim=16, n_heads=2, max_len=4), _ctx(inter, 4), enc, ids, mask)
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_new_items_get_scored_and_loaded_weights_refresh_the_table():
    n, depth, d = 12, 2, 8
    g = torch.Generator().manual_seed(1)
    inter = _cycle_data(n, 6, 5, seed=0)
    cfg = IISANConfig(dim=8, n_heads=1, n_layers=1, max_len=4, bottleneck=4)
    model = IISAN.build(cfg, _ctx(inter, 4), {"text": LayerStates(torch.randn(n + 1, depth + 1, d, generator=g),
                                                                   [0, 1, 2], depth)})
    other = IISAN.build(cfg, _ctx(inter, 4),
                        {"text": LayerStates(torch.randn(n + 1, depth + 1, d, generator=g), [0, 1, 2], depth)})
    model.eval()
    with torch.no_grad():
        before = model.tower.all().clone()
        with torch.no_grad():
            for p in other.parameters():
                p.add_(0.5)
        model.load_state_dict(other.state_dict())
        assert not torch.allclose(model.tower.all(), before)  # no stale cached table
        grown = torch.randn(n + 6, depth + 1, d, generator=g)  # 5 new items, encoded after training
        model.set_hidden_states({"text": LayerStates(grown, [0, 1, 2], depth)})
        scores = model.score(history_batch([np.array([1, 2])], 4))
    assert scores.shape == (1, n + 6) and bool(torch.isfinite(scores).all())


def test_encoder_tower_pools_like_the_hidden_state_cache_and_ignores_padding(tiny_encoders):
    """NaN in padded positions (as left-padded decoders produce) must not reach an item vector."""
    from types import SimpleNamespace

    from modalrec.models.iisan.peft_baselines import EncoderTower

    text_enc, _, _ = tiny_encoders

    class NaNAtPadding(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, input_ids, attention_mask, return_dict=True):
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return SimpleNamespace(last_hidden_state=hidden.masked_fill(~attention_mask.bool()[..., None], float("nan")))

    titles = ["", "a", "a much longer item title with many words"]  # item 1 is padded next to item 2
    ids, mask = tokenize_items(text_enc.tokenizer, titles, max_tokens=16)
    tower = EncoderTower(ids, mask, hidden=48, dim=8)
    tower.attach(text_enc.module)
    tower.eval()
    with torch.no_grad():
        clean = tower.all()
        tower.attach(NaNAtPadding(text_enc.module))
        poisoned = tower.eval().all()  # eval() drops the cached table
    assert bool(torch.isfinite(poisoned).all())
    torch.testing.assert_close(poisoned, clean)
