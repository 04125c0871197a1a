"""Noisy Linear Imputation (NLI) of ROAD (Rong et al., ICML 2022), batched in torch (CPU or CUDA).

Definition (PROTOCOLS.md, "ROAD"): per channel, every removed pixel equals the weighted mean of
its 8 neighbours (1/6 for edge neighbours, 1/12 for diagonal ones, renormalised over the
neighbours that exist at the border); all removed pixels are solved jointly with the kept
pixels as boundary values; then Gaussian noise (``noise_sigma``) is added to the removed pixels.
The reference implementation solves each image with scipy's sparse LU on the CPU.

How it is solved here, for many images and channels at once (the grid operator, array layouts and
multigrid live in ``xaibench.imputation_grid``):
- Multiplied by the degree d_p (the sum of the existing neighbours' weights), the equations read
  d_p x_p - sum_q w_q x_q = 0. This form is exactly symmetric and positive definite (every hole
  touches a kept pixel), so conjugate gradients apply; the divided form is not symmetric at the
  border. Each (image, channel) system keeps its own CG coefficients.
- The operator is matrix-free on the pixel grid: the 8-neighbour sum is a separable zero-padded
  [1 2 1] x [1 2 1] filter built from shifted slices (much faster than conv2d on a CPU).
- Preconditioner: when every hole is shallow (random pixels), Jacobi (1/d). When holes are deep
  (blobs, the shape real attribution maps give), Jacobi-preconditioned CG needs hundreds of
  iterations; a multigrid V-cycle (vertex-centred, bilinear interpolation, Galerkin coarse
  operators, damped Jacobi smoothing, dense inverse on the coarsest grid) keeps CG at 5-7
  iterations whatever the hole size. ``solver="dense"`` solves small images directly in float64
  (exact, but batched LAPACK is ~10x slower than Jacobi-PCG on 8x8 images: "auto" never picks it).
- A batch stops when its slowest system has converged, so solves group similar images: each
  solver's images are sorted by how many pixels they lose before being cut into solves, and
  Jacobi-PCG drops the images whose systems have converged once they are half of its batch.
- fp32 accuracy: d x_p - sum w x_q loses digits in deep holes (an error floor near 1e-4), so the
  true residual is computed in the difference form sum_q w_q (x_q - x_p), and CG is restarted
  from it (iterative refinement) until it is below ``tol`` relative to the right-hand side.
  The error can exceed the residual by the hole's squared radius, hence the tight default.
- Speed on a CPU is memory traffic and, on small images, the cost of launching each operation:
  every array of a solve is allocated once and reused (fresh multi-megabyte temporaries cost page
  faults), a solve takes a few images at a time so its arrays stay in the cache
  (``CHUNK_ELEMENTS``), and images narrower than ``BATCH_LAST_WIDTH`` are stored batch-last, so
  each operation runs over long rows.
- No torch.compile: it costs 15-40 s per new shape, more than a benchmark run of small images
  takes; everything here is plain eager torch.

A system that does not converge raises ``ImputationError``: never silently wrong values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from xaibench import imputation_grid as grid
from xaibench.seeding import per_item

# one of each symmetric pair of neighbours: the difference x_q - x_p serves both ends
HALF = tuple((dy, dx, weight) for dy, dx, weight in grid.NEIGHBOURS if (dy, dx) > (0, 0))
SHALLOW_DEPTH = 3  # holes at most this many pixels from a kept pixel use Jacobi-PCG
BATCH_LAST_WIDTH = 64  # narrower images are stored batch-last (see grid.batch_last)
# smaller imputations run on one intra-op thread: waking a second OpenMP thread for each of their
# thousands of small operations costs more than it saves (8x8 ROAD copies, 2 threads: 19 -> 15 ms)
SERIAL_ELEMENTS = 1 << 18
COMPACT_MIN = 32  # batches of fewer images keep their converged systems (moving them costs more)
# N*C*H*W per solve: bounds memory, not results; on a CPU small enough for the arrays to stay in cache
CHUNK_ELEMENTS = {"cpu": 1_200_000, "cuda": 1 << 25}


class ImputationError(RuntimeError):
    """A linear system did not converge: the imputation would be wrong, so none is returned."""


def impute(
    images: Tensor,
    removed: Tensor,
    noise_sigma: float = 0.01,
    seeds: Tensor | None = None,
    *,
    tol: float = 1e-6,
    solver: str = "auto",
) -> Tensor:
    """Fill the ``removed`` pixels of ``images`` by noisy linear imputation.

    images: (N, C, H, W) float; removed: (N, 1, H, W) bool (all channels of a pixel at once);
    seeds: (N,) int64, one per image, for the noise (needed when ``noise_sigma`` > 0), so an
    image gets the same noise whatever batch it is in. ``solver``: "auto" (Jacobi-preconditioned CG
    for small images and shallow holes, multigrid-preconditioned CG for deep holes, per image), "dense",
    "jacobi" or "multigrid". Kept pixels are returned unchanged.
    """
    if images.dim() != 4 or removed.shape != (images.shape[0], 1, *images.shape[2:]):
        raise ValueError(f"images (N, C, H, W) and removed (N, 1, H, W) expected, got {images.shape}, {removed.shape}")
    if solver not in ("auto", "dense", "jacobi", "multigrid"):
        raise ValueError(f"unknown solver {solver!r}")
    removed = removed.to(torch.bool)
    n, channels, height, width = images.shape
    counts = removed.flatten(1).sum(1)  # (a sum: bool all() over a dimension is 20x slower)
    if height * width > 0 and bool((counts == height * width).any()):
        raise ValueError("an image has every pixel removed: nothing to impute from")
    values = images.to(torch.float32)
    if solver == "auto":
        if max(height, width) <= 2 * grid.COARSEST_SIDE:  # no hole can be deep
            groups = {"jacobi": torch.ones(n, dtype=torch.bool, device=images.device)}
        else:
            shallow = _shallow(removed)
            groups = {"jacobi": shallow, "multigrid": ~shallow}
    else:
        groups = {solver: torch.ones(n, dtype=torch.bool, device=images.device)}
    per_chunk = max(1, CHUNK_ELEMENTS.get(images.device.type, CHUNK_ELEMENTS["cpu"]) // values[0].numel())
    threads = torch.get_num_threads()
    serial = images.device.type == "cpu" and threads > 1 and values.numel() < SERIAL_ELEMENTS
    if serial:  # (per calling thread: OpenMP's thread count is a per-thread setting)
        torch.set_num_threads(1)
    try:
        out = _solve_groups(values, removed, counts, groups, per_chunk, tol)
    finally:
        if serial:
            torch.set_num_threads(threads)
    if out is images:  # nothing was removed: still a new tensor, as callers may write to it
        out = out.clone()
    if noise_sigma > 0:
        if seeds is None or len(seeds) != n:
            raise ValueError("noise needs one seed per image")
        noise = per_item(seeds, lambda g: torch.randn((channels, height, width), generator=g)).to(out.device)
        out = torch.where(removed, out + noise_sigma * noise, out)
    return out.to(images.dtype)


def _solve_groups(values: Tensor, removed: Tensor, counts: Tensor, groups: dict, per_chunk: int, tol: float) -> Tensor:
    """Every group of images through its solver, ``per_chunk`` images per solve."""
    n = len(values)
    out = values
    for name, members in groups.items():
        index = (members & (counts > 0)).nonzero().flatten()
        if len(index) > per_chunk:  # images with as many removed pixels together: a chunk stops when its own converge
            index = index[counts[index].argsort(stable=True)]
        for chunk in index.tensor_split(math.ceil(len(index) / per_chunk)) if len(index) else ():
            solve = _dense if name == "dense" else _cg
            whole = len(chunk) == n  # one chunk of every image: no gather, no scatter
            part = solve(values if whole else values[chunk], removed if whole else removed[chunk], name, tol)
            if whole:
                out = part
            else:
                out = values.clone() if out is values else out
                out[chunk] = part
    return out


# ---- geometry ------------------------------------------------------------------------------------


def _shallow(removed: Tensor) -> Tensor:
    """Per image: is every removed pixel within SHALLOW_DEPTH pixels (8-neighbourhood) of a kept one?"""
    cover = ~removed
    for _ in range(SHALLOW_DEPTH):  # separable dilation by shifted slices (max_pool2d is 30x slower)
        rows = cover.clone()
        rows[..., 1:, :] |= cover[..., :-1, :]
        rows[..., :-1, :] |= cover[..., 1:, :]
        cover = rows.clone()
        cover[..., :, 1:] |= rows[..., :, :-1]
        cover[..., :, :-1] |= rows[..., :, 1:]
    return cover.flatten(1).all(1)


def _residual(x: Tensor, unknown: Tensor, out: Tensor, work: Tensor) -> Tensor:
    """b - A x in the difference form sum_q w_q (x_q - x_p): accurate in fp32 where x is smooth.

    Each neighbour difference is computed once and added to both of its pixels; ``work`` is scratch.
    """
    height, width = x.shape[-2:]
    out.zero_()
    for dy, dx, weight in HALF:
        (yp, yq), (xp, xq) = grid.pair(dy, height), grid.pair(dx, width)
        difference = torch.sub(x[..., yq, xq], x[..., yp, xp], out=work[..., yp, xp])
        out[..., yp, xp].add_(difference, alpha=weight)
        out[..., yq, xq].sub_(difference, alpha=weight)
    return out.mul_(unknown)


class _Jacobi:
    """The Jacobi preconditioner 1/d: one array for every image, as CG's residuals are already
    zero off the unknowns."""

    def __init__(self, degree: Tensor):
        self.inverse = 1.0 / degree.clamp_min(1e-6)

    def __call__(self, r: Tensor, out: Tensor) -> Tensor:
        return torch.mul(r, self.inverse, out=out)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per (image, channel) inner products, (N, C, 1, 1). (bmm and einsum were 4x slower on a CPU.)"""
    if a.stride(-1) != 1:  # batch-last layout: a reduction over the outer dimensions
        return (a * b).sum((2, 3), keepdim=True)
    return torch.linalg.vecdot(a.flatten(2), b.flatten(2))[..., None, None]


# ---- solvers -------------------------------------------------------------------------------------


def _dense(images: Tensor, removed: Tensor, name: str, tol: float) -> Tensor:
    """Direct float64 solve of the full system (kept pixels as identity rows): small images only."""
    n, channels, height, width = images.shape
    pixels = height * width
    unknown = removed.flatten(1)
    index = torch.arange(pixels, device=images.device).view(height, width)
    matrix = torch.zeros(pixels, pixels, dtype=torch.float64, device=images.device)
    for dy, dx, weight in grid.NEIGHBOURS:
        (yd, ys), (xd, xs) = grid.pair(dy, height), grid.pair(dx, width)
        matrix[index[yd, xd].flatten(), index[ys, xs].flatten()] = -weight
    degree = grid.degree_field(height, width, images.device).flatten().double()
    matrix = matrix * unknown[:, :, None] + torch.diag_embed(torch.where(unknown, degree, 1.0))
    rhs = torch.where(unknown[:, :, None], 0.0, images.flatten(2).transpose(1, 2).double())
    solution = torch.linalg.solve(matrix, rhs)
    return solution.transpose(1, 2).reshape(n, channels, height, width).float()


def _cg(images: Tensor, removed: Tensor, name: str, tol: float, rounds: int = 4) -> Tensor:
    """Preconditioned CG with iterative refinement on the true (difference-form) residual."""
    n, channels, height, width = images.shape
    levels = grid.levels(height, width) if name == "multigrid" else 0
    # multigrid halves (h - 1): pad to 2^levels * m + 1 with pixels that are not there (no weight)
    step = 1 << levels
    pad = (0, -(width - 1) % step, 0, -(height - 1) % step) if levels else (0, 0, 0, 0)
    unknown = F.pad(removed.float(), pad)
    degree = F.pad(grid.degree_field(height, width, images.device), pad)
    padded = F.pad(images, pad)
    if width < BATCH_LAST_WIDTH:
        images, removed, unknown, padded = map(grid.batch_last, (images, removed, unknown, padded))
    fine = grid.Fine(unknown, degree, padded)
    residual = torch.zeros_like(fine.rows)  # padding stays zero
    work = torch.empty_like(residual)
    inside = (..., slice(0, height), slice(0, width))
    # b (the kept neighbours' weighted sum) only scales the tolerance: the cheap sum form will do
    keep = padded * (1.0 - unknown)
    rhs = fine.apply(keep, work).mul_(unknown).neg_()
    target = tol * _dot(rhs, rhs).sqrt() + 1e-12
    # start from each channel's mean over the kept pixels: a smaller correction, a smaller fp32 error
    mean = keep.sum((2, 3), keepdim=True) / (1.0 - unknown).sum((2, 3), keepdim=True).clamp_min(1)
    x = torch.where(removed, mean, images)
    if levels:  # multigrid; an image no wider than the coarsest grid has no coarser level: Jacobi
        precondition = grid.Multigrid(unknown, degree, fine, levels).vcycle
        max_iter = 200
    else:
        precondition = _Jacobi(degree)
        max_iter = 20 * (height + width) + 100
    previous = None
    for round_ in range(rounds + 1):
        _residual(x, unknown[inside], residual[inside], work[inside])
        relative = (_dot(residual, residual).sqrt() / target * tol).max().item()
        # fp32 has a floor near 1e-6 in deep holes: accept up to 10 tol once refinement stalls
        if relative <= tol or (previous is not None and relative <= 10 * tol and relative > 0.5 * previous):
            return x.contiguous()
        if round_ == rounds:
            break
        previous = relative
        x += _pcg(residual, fine, precondition, target, max_iter)[inside]
    raise ImputationError(f"{name} CG did not converge: relative residual {relative:.1e} > {tol:.0e}")


def _pcg(residual: Tensor, fine: grid.Fine, precondition, target: Tensor, max_iter: int) -> Tensor:
    """Solve A e = residual per (image, channel) system (residual is overwritten); converged systems
    freeze (step 0). Aims below the target so that fp32 drift rarely needs another round.

    With Jacobi (1/d >= 1, so r.z >= r.r) convergence is checked on r.z, which CG needs anyway:
    one inner product less per step. Jacobi can also be restricted to some images: those whose
    systems have all converged leave the arrays once they are half of them, so a batch mixing easy
    and hard systems (ROAD's fractions 0.1-0.9 of one item) costs what its systems need, not all of
    them what the hardest needs."""
    goal = (0.5 * target) ** 2
    jacobi = isinstance(precondition, _Jacobi)
    correction = torch.zeros_like(residual)
    direction, z, q = torch.empty_like(residual), torch.empty_like(residual), torch.empty_like(residual)
    precondition(residual, direction)
    rz = _dot(residual, direction)
    active = (rz if jacobi else _dot(residual, residual)) > goal
    whole, index = correction, None  # index: the rows of ``whole`` still being solved
    for _ in range(max_iter if active.any() else 0):
        fine.apply(direction, q)
        alpha = torch.where(active, rz / _dot(direction, q), 0.0)
        correction.addcmul_(direction, alpha)
        residual.addcmul_(q, alpha, value=-1.0)
        if jacobi:
            rz_new = _dot(residual, precondition(residual, z))
            active &= rz_new > goal
        else:
            active &= _dot(residual, residual) > goal
        if not active.any():
            break
        if jacobi and len(active) >= COMPACT_MIN:
            alive = active.flatten(1).any(1)
            if 2 * int(alive.sum()) <= len(alive):
                keep = alive.nonzero().flatten()
                if index is not None:
                    grid.put(whole, index, correction)
                index = keep if index is None else index[keep]
                correction, residual, direction, z = (grid.take(t, keep) for t in (correction, residual, direction, z))
                q = torch.empty_like(direction)
                rz, rz_new, active, goal = rz[keep], rz_new[keep], active[keep], goal[keep]
                fine = fine.take(keep)
        if not jacobi:
            rz_new = _dot(residual, precondition(residual, z))
        beta = torch.where(active, rz_new / rz, 0.0)
        rz = rz_new
        direction, z = z.addcmul_(direction, beta), direction
    if index is None:
        return correction
    return grid.put(whole, index, correction)
