"""Fusion modules: shapes, missing-modality masks, FiLM identity at init, gate weights, learning."""

from __future__ import annotations

import pytest
import torch

from modalrec.errors import ConfigError
from modalrec.models.towers.fusion import FUSIONS, FiLMFusion, GatedFusion, make_fusion

DIM = 8



def _inputs(n: int = 6, m: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, DIM, generator=g) for _ in range(m)]


def _perturb(module: torch.nn.Module, seed: int = 1) -> None:
    """Random weights everywhere (a trained module), so no test passes only thanks to zero init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize("kind", sorted(FUSIONS))
@pytest.mark.parametrize("m", [2, 3])
def test_shapes_and_all_present(kind: str, m: int) -> None:
    fusion = make_fusion(kind, DIM, m)
    _perturb(fusion)
    xs = [x.requires_grad_() for x in _inputs(m=m)]
    out = fusion(xs)
    assert out.shape == (6, DIM)
    assert torch.isfinite(out).all()
    masks = [torch.ones(6, dtype=torch.bool)] * m
    assert torch.allclose(out, fusion(xs, masks))  # None == all present
    out.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in [*xs, *fusion.parameters()])


@pytest.mark.parametrize("kind", sorted(FUSIONS))
def test_missing_modality_contributes_nothing(kind: str) -> None:
    fusion = make_fusion(kind, DIM, 2)
    _perturb(fusion)
    xs = _inputs()
    present = [torch.tensor([1, 1, 0, 1, 0, 0], dtype=torch.bool), torch.tensor([1, 0, 1, 1, 1, 0], dtype=torch.bool)]
    out = fusion(xs, present)
    # Replace the values of every missing slot by garbage (incl. NaN): the output must not change.
    garbage = [torch.where(p[:, None], x, torch.full_like(x, float("nan"))) for x, p in zip(xs, present)]
    assert torch.equal(out, fusion(garbage, present))
    garbage = [torch.where(p[:, None], x, 100 * torch.randn_like(x)) for x, p in zip(xs, present)]
    assert torch.allclose(out, fusion(garbage, present))
    assert torch.equal(out[5], torch.zeros(DIM))  # nothing present -> zero vector
    # A row whose other modality is missing is a function of the present one only, and not constant.
    assert not torch.allclose(out[1], out[4])


def test_sum_is_sum_of_present() -> None:
    xs = _inputs()
    present = [torch.tensor([1, 0, 1, 0, 1, 1], dtype=torch.bool), torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.bool)]
    out = make_fusion("sum", DIM)(xs, present)
    expected = xs[0] * present[0][:, None] + xs[1] * present[1][:, None]
    assert torch.allclose(out, expected)


def test_film_is_identity_on_image_branch_at_init() -> None:
    film = make_fusion("film", DIM)
    assert isinstance(film, FiLMFusion)
    text, image = _inputs()
    gamma, beta = film.modulation(text)
    assert torch.equal(gamma, torch.ones_like(gamma)) and torch.equal(beta, torch.zeros_like(beta))
    assert torch.allclose(film([text, image]), image)
    # After a generic re-init (what sequence models do), init_weights restores the identity.
    _perturb(film)
    assert not torch.allclose(film([text, image]), image)
    film.init_weights(torch.Generator().manual_seed(0))
    assert torch.allclose(film([text, image]), image)


def test_film_missing_branches() -> None:
    film = make_fusion("film", DIM)
    _perturb(film)
    text, image = _inputs()
    yes, no = torch.ones(6, dtype=torch.bool), torch.zeros(6, dtype=torch.bool)
    assert torch.allclose(film([text, image], [no, yes]), image)  # no conditioner: image unchanged
    assert torch.allclose(film([text, image], [yes, no]), text)  # nothing to modulate: text alone
    gamma, beta = film.modulation(text)
    assert torch.allclose(film([text, image], [yes, yes]), gamma[:, 0] * image + beta[:, 0])
    with pytest.raises(ConfigError):
        make_fusion("film", DIM, 1)


def test_gated_weights_sum_to_one_over_present() -> None:
    gated = make_fusion("gated", DIM, 3)
    assert isinstance(gated, GatedFusion)
    xs = _inputs(n=5, m=3)
    present = [torch.tensor(v, dtype=torch.bool) for v in ([1, 1, 0, 0, 0], [1, 0, 1, 0, 0], [1, 1, 1, 1, 0])]
    w0 = gated.weights(xs, present)
    assert torch.allclose(w0[0], torch.full((3,), 1 / 3))  # zero-initialised gate: equal weights
    _perturb(gated)
    w = gated.weights(xs, present)
    mask = torch.stack(present, 1)
    assert (w >= 0).all() and torch.equal(w[~mask], torch.zeros(int((~mask).sum())))
    assert torch.allclose(w[:4].sum(1), torch.ones(4))
    assert torch.equal(w[4], torch.zeros(3))  # nothing present
    assert not torch.allclose(w[0], torch.full((3,), 1 / 3))  # weights depend on the inputs
    out = gated(xs, present)
    assert torch.allclose(out, (torch.stack(xs, 1) * w[:, :, None]).sum(1), atol=1e-6)


def test_gated_learns_to_trust_the_informative_modality() -> None:
    """Target = modality 0; modality 1 is noise. The gate must move its weight onto modality 0."""
    torch.manual_seed(0)
    gated = make_fusion("gated", DIM, 2, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(gated.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(3)
    for _ in range(80):
        signal, noise = torch.randn(64, DIM, generator=g), torch.randn(64, DIM, generator=g)
        loss = ((gated([signal, noise]) - signal) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    xs = [torch.randn(100, DIM, generator=g), torch.randn(100, DIM, generator=g)]
    assert gated.weights(xs)[:, 0].mean() > 0.9


def test_make_fusion_unknown() -> None:
    with pytest.raises(ConfigError, match="unknown fusion"):
        make_fusion("attention", DIM)
    with pytest.raises(ValueError, match="expects 2"):
        make_fusion("sum", DIM, 2)(_inputs(m=3))
