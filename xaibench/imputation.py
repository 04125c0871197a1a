"""Noisy Linear Imputation (NLI) of ROAD (Rong et al., ICML 2022), batched in torch (CPU or CUDA).

Definition (PROTOCOLS.md, "ROAD"): per channel, every removed pixel equals the weighted mean of
its 8 neighbours (1/6 for edge neighbours, 1/12 for diagonal ones, renormalised over the
neighbours that exist at the border); all removed pixels are solved jointly with the kept
pixels as boundary values; then Gaussian noise (``noise_sigma``) is added to the removed pixels.
The reference implementation solves each image with scipy's sparse LU on the CPU.

How it is solved here, for many images and channels at once:
- Multiplied by the degree d_p (the sum of the existing neighbours' weights), the equations read
  d_p x_p - sum_q w_q x_q = 0. This form is exactly symmetric and positive definite (every hole
  touches a kept pixel), so conjugate gradients apply; the divided form is not symmetric at the
  border. Each (image, channel) system keeps its own CG coefficients; a batch stops when its
  slowest system has converged.
- The operator is matrix-free on the pixel grid: the 8-neighbour sum is a separable zero-padded
  [1 2 1] x [1 2 1] filter built from shifted slices (much faster than conv2d on a CPU).
- Preconditioner: when every hole is shallow (random pixels), Jacobi (1/d). When holes are deep
  (blobs, the shape real attribution maps give), Jacobi-preconditioned CG needs hundreds of
  iterations; a multigrid V-cycle (vertex-centred, bilinear interpolation, Galerkin coarse
  operators, damped Jacobi smoothing, dense inverse on the coarsest grid) keeps CG at 5-7
  iterations whatever the hole size. ``solver="dense"`` solves small images directly in float64 (exact, but batched
  LAPACK is ~10x slower than Jacobi-PCG on 8x8 images, so "auto" never picks it).
- fp32 accuracy: d x_p - sum w x_q loses digits in deep holes (an error floor near 1e-4), so the
  true residual is computed in the difference form sum_q w_q (x_q - x_p), and CG is restarted
  from it (iterative refinement) until it is below ``tol`` relative to the right-hand side.
  The error can exceed the residual by the hole's squared radius, hence the tight default.
- Speed on a CPU is memory traffic: every array of a solve is allocated once and reused (fresh
  multi-megabyte temporaries cost page faults), and a solve takes a few images at a time so its
  arrays stay in the cache (``CHUNK_ELEMENTS``).
- No torch.compile: it costs 15-40 s per new shape, more than a benchmark run of small images
  takes; everything here is plain eager torch.

A system that does not converge raises ``ImputationError``: never silently wrong values.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from xaibench.seeding import per_item

EDGE, DIAG = 1.0 / 6.0, 1.0 / 12.0
# the 8 neighbours (dy, dx, weight) and the 9-point stencil's offsets (index 4 = the centre)
NEIGHBOURS = tuple((dy, dx, DIAG if dy and dx else EDGE) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
# one of each symmetric pair of neighbours: the difference x_q - x_p serves both ends
HALF = tuple((dy, dx, weight) for dy, dx, weight in NEIGHBOURS if (dy, dx) > (0, 0))
STENCIL = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
OMEGA = 0.9  # Jacobi damping of the smoother (0.7-1.0 give the same CG counts within one step)
SHALLOW_DEPTH = 3  # holes at most this many pixels from a kept pixel use Jacobi-PCG
BATCH_LAST_WIDTH = 64  # narrower images are stored batch-last (see _batch_last)
COMPACT_MIN = 32  # batches of fewer images keep their converged systems (moving them costs more)
COARSEST_SIDE = 8  # multigrid coarsens until the grid is at most this wide (dense inverse there)
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
    out = values
    if solver == "auto":
        if max(height, width) <= 2 * COARSEST_SIDE:  # no hole can be deep
            groups = {"jacobi": torch.ones(n, dtype=torch.bool, device=images.device)}
        else:
            shallow = _shallow(removed)
            groups = {"jacobi": shallow, "multigrid": ~shallow}
    else:
        groups = {solver: torch.ones(n, dtype=torch.bool, device=images.device)}
    per_chunk = max(1, CHUNK_ELEMENTS.get(images.device.type, CHUNK_ELEMENTS["cpu"]) // values[0].numel())
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
    if out is images:  # nothing was removed: still a new tensor, as callers may write to it
        out = out.clone()
    if noise_sigma > 0:
        if seeds is None or len(seeds) != n:
            raise ValueError("noise needs one seed per image")
        noise = per_item(seeds, lambda g: torch.randn((channels, height, width), generator=g)).to(out.device)
        out = torch.where(removed, out + noise_sigma * noise, out)
    return out.to(images.dtype)


# ---- geometry ------------------------------------------------------------------------------------


def _pair(offset: int, size: int) -> tuple[slice, slice]:
    """(positions i, positions i + offset) along one axis where both lie inside [0, size)."""
    if offset > 0:
        return slice(0, size - offset), slice(offset, size)
    if offset < 0:
        return slice(-offset, size), slice(0, size + offset)
    return slice(0, size), slice(0, size)


def _degree(height: int, width: int, device) -> Tensor:
    """d_p: the summed weight of the neighbours that exist, (1, 1, H, W)."""
    degree = torch.zeros(1, 1, height, width, device=device)
    for dy, dx, weight in NEIGHBOURS:
        (ys, _), (xs, _) = _pair(dy, height), _pair(dx, width)
        degree[..., ys, xs] += weight
    return degree


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
        (yp, yq), (xp, xq) = _pair(dy, height), _pair(dx, width)
        difference = torch.sub(x[..., yq, xq], x[..., yp, xp], out=work[..., yp, xp])
        out[..., yp, xp].add_(difference, alpha=weight)
        out[..., yq, xq].sub_(difference, alpha=weight)
    return out.mul_(unknown)


def _neighbour_sum12(v: Tensor, out: Tensor, rows: Tensor) -> Tensor:
    """12 * sum_q w_q v_q + 4 v: the zero-padded separable [1 2 1] x [1 2 1] filter of v, into out."""
    torch.mul(v, 2, out=rows)
    rows[..., :, 1:] += v[..., :, :-1]
    rows[..., :, :-1] += v[..., :, 1:]
    torch.mul(rows, 2, out=out)
    out[..., 1:, :] += rows[..., :-1, :]
    out[..., :-1, :] += rows[..., 1:, :]
    return out


class _Fine:
    """A v = d v - sum_q w_q v_q on the unknowns (v is zero elsewhere), with its scratch array."""

    def __init__(self, unknown: Tensor, degree: Tensor, template: Tensor):
        self.centre = degree + 1.0 / 3.0  # d v - (sum12 - 4 v) / 12
        self.minus12 = unknown * (-1.0 / 12.0)
        self.rows = torch.empty_like(template)

    def apply(self, v: Tensor, out: Tensor) -> Tensor:
        return _neighbour_sum12(v, out, self.rows).mul_(self.minus12).addcmul_(v, self.centre)

    def take(self, index: Tensor) -> _Fine:
        """The operator of the images ``index`` only."""
        part = object.__new__(_Fine)
        part.centre, part.minus12 = self.centre, _take(self.minus12, index)
        part.rows = _empty((len(index), *self.rows.shape[1:]), self.rows)
        return part


class _Jacobi:
    """The Jacobi preconditioner 1/d: one array for every image, as CG's residuals are already
    zero off the unknowns."""

    def __init__(self, degree: Tensor):
        self.inverse = 1.0 / degree.clamp_min(1e-6)

    def __call__(self, r: Tensor, out: Tensor) -> Tensor:
        return torch.mul(r, self.inverse, out=out)

    def take(self, index: Tensor) -> _Jacobi:
        return self


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per (image, channel) inner products, (N, C, 1, 1). (bmm and einsum were 4x slower on a CPU.)"""
    if a.stride(-1) != 1:  # batch-last layout: a reduction over the outer dimensions
        return (a * b).sum((2, 3), keepdim=True)
    return torch.linalg.vecdot(a.flatten(2), b.flatten(2))[..., None, None]


def _empty(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised (N, C, H, W) array stored like ``like`` (batch-last or contiguous)."""
    if like.shape[0] > 1 and like.stride(0) == 1:
        return torch.empty(shape[2], shape[3], shape[1], shape[0], device=like.device).permute(3, 2, 0, 1)
    return torch.empty(shape, device=like.device)


def _take(t: Tensor, index: Tensor) -> Tensor:
    """The images ``index`` of t, stored like t."""
    if t.shape[0] > 1 and t.stride(0) == 1:
        return t.permute(2, 3, 1, 0).index_select(3, index).permute(3, 2, 0, 1)
    return t.index_select(0, index)


def _put(whole: Tensor, index: Tensor, part: Tensor) -> Tensor:
    """whole[index] = part, in place, whatever the layouts; returns whole."""
    if whole.shape[0] > 1 and whole.stride(0) == 1:
        whole.permute(2, 3, 1, 0).index_copy_(3, index, part.permute(2, 3, 1, 0))
    else:
        whole.index_copy_(0, index, part)
    return whole


def _batch_last(t: Tensor) -> Tensor:
    """The same (N, C, H, W) tensor stored with N innermost: on small images every shifted slice
    and every per-image sum then runs over long contiguous rows of N values."""
    return t.permute(2, 3, 1, 0).contiguous().permute(3, 2, 0, 1)


# ---- solvers -------------------------------------------------------------------------------------


def _dense(images: Tensor, removed: Tensor, name: str, tol: float) -> Tensor:
    """Direct float64 solve of the full system (kept pixels as identity rows): small images only."""
    n, channels, height, width = images.shape
    pixels = height * width
    unknown = removed.flatten(1)
    index = torch.arange(pixels, device=images.device).view(height, width)
    matrix = torch.zeros(pixels, pixels, dtype=torch.float64, device=images.device)
    for dy, dx, weight in NEIGHBOURS:
        (yd, ys), (xd, xs) = _pair(dy, height), _pair(dx, width)
        matrix[index[yd, xd].flatten(), index[ys, xs].flatten()] = -weight
    degree = _degree(height, width, images.device).flatten().double()
    matrix = matrix * unknown[:, :, None] + torch.diag_embed(torch.where(unknown, degree, 1.0))
    rhs = torch.where(unknown[:, :, None], 0.0, images.flatten(2).transpose(1, 2).double())
    solution = torch.linalg.solve(matrix, rhs)
    return solution.transpose(1, 2).reshape(n, channels, height, width).float()


def _levels(height: int, width: int) -> int:
    """Coarse levels below a (height, width) grid, each (h + 1) / 2 wide, down to COARSEST_SIDE."""
    return max(0, math.ceil(math.log2((max(height, width) - 1) / (COARSEST_SIDE - 1))))


def _cg(images: Tensor, removed: Tensor, name: str, tol: float, rounds: int = 4) -> Tensor:
    """Preconditioned CG with iterative refinement on the true (difference-form) residual."""
    n, channels, height, width = images.shape
    levels = _levels(height, width) if name == "multigrid" else 0
    # multigrid halves (h - 1): pad to 2^levels * m + 1 with pixels that are not there (no weight)
    step = 1 << levels
    pad = (0, -(width - 1) % step, 0, -(height - 1) % step) if levels else (0, 0, 0, 0)
    unknown = F.pad(removed.float(), pad)
    degree = F.pad(_degree(height, width, images.device), pad)
    padded = F.pad(images, pad)
    if width < BATCH_LAST_WIDTH:
        images, removed, unknown, padded = map(_batch_last, (images, removed, unknown, padded))
    fine = _Fine(unknown, degree, padded)
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
        precondition = _Multigrid(unknown, degree, fine, levels).vcycle
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


def _pcg(residual: Tensor, fine: _Fine, precondition, target: Tensor, max_iter: int) -> Tensor:
    """Solve A e = residual per (image, channel) system (residual is overwritten); converged systems
    freeze (step 0). Aims below the target so that fp32 drift rarely needs another round.

    With a preconditioner that can be restricted to some images (Jacobi), the images whose systems
    have all converged leave the arrays once they are half of them: a batch mixing easy and hard
    systems (ROAD's fractions 0.1-0.9 of one item) then costs what its systems need, not all of
    them what the hardest needs."""
    goal = (0.5 * target) ** 2
    correction = torch.zeros_like(residual)
    direction, z, q = torch.empty_like(residual), torch.empty_like(residual), torch.empty_like(residual)
    precondition(residual, direction)
    rz = _dot(residual, direction)
    active = _dot(residual, residual) > goal
    whole, index = correction, None  # index: the rows of ``whole`` still being solved
    for _ in range(max_iter):
        if not active.any():
            break
        fine.apply(direction, q)
        alpha = torch.where(active, rz / _dot(direction, q), 0.0)
        correction.addcmul_(direction, alpha)
        residual.addcmul_(q, alpha, value=-1.0)
        active &= _dot(residual, residual) > goal
        if not active.any():
            break
        alive = active.flatten(1).any(1)
        if hasattr(precondition, "take") and len(alive) >= COMPACT_MIN and 2 * int(alive.sum()) <= len(alive):
            keep = alive.nonzero().flatten()
            if index is not None:
                _put(whole, index, correction)
            index = keep if index is None else index[keep]
            correction, residual, direction = (_take(t, keep) for t in (correction, residual, direction))
            z, q = torch.empty_like(direction), torch.empty_like(direction)
            rz, active, goal = rz[keep], active[keep], goal[keep]
            fine, precondition = fine.take(keep), precondition.take(keep)
        precondition(residual, z)
        rz_new = _dot(residual, z)
        beta = torch.where(active, rz_new / rz, 0.0)
        rz = rz_new
        direction, z = z.addcmul_(direction, beta), direction
    if index is None:
        return correction
    return _put(whole, index, correction)


class _Multigrid:
    """Symmetric V-cycle, vertex-centred: each coarse point sits on every other fine point.

    Interpolation is bilinear (masked to the unknowns), restriction its transpose, the coarse
    operators Galerkin (P^T A P: 9-point stencils, one strided convolution per level), the smoother
    damped Jacobi, the coarsest grid solved by its inverse. One pre- and one post-smoothing step
    make it symmetric positive definite, as CG needs. With bilinear interpolation CG needs 5-7
    steps; the 2x2 aggregation tried first needed 13-15 (piecewise-constant coarse functions
    represent a smooth error badly, even over-corrected). Stencils are (N, 9, h, w): the operator
    is the same for every channel of an image.
    """

    def __init__(self, unknown: Tensor, degree: Tensor, fine: _Fine, levels: int):
        self.fine = fine
        self.active = unknown
        self.smoother = OMEGA * unknown / degree.clamp_min(1e-6)
        self.work = torch.empty_like(fine.rows)
        self.levels: list[_Level] = []
        stencil, active, finer = _fine_stencil(unknown, degree), unknown, self.work
        for _ in range(levels):
            stencil, active = _galerkin(stencil, active)
            self.levels.append(_Level(stencil, active, finer))
            finer = self.levels[-1].work
        # the coarsest grid (<= COARSEST_SIDE^2 points) is solved by its explicit (symmetric)
        # inverse: a batched product is 1000x faster than cholesky_solve's per-call LAPACK overhead.
        # Cholesky, not linalg.inv: MKL's batched LU fails on some of these matrices with 2 threads.
        # P^T A P is singular when masked coarse functions are linearly dependent (four of them
        # sharing one fine unknown); those directions are the ones P sends to zero, so a relative
        # shift of the diagonal makes it definite without changing what is prolonged.
        matrix = _dense_matrix(stencil, active)
        matrix.diagonal(dim1=1, dim2=2).mul_(1.0 + 1e-6)
        cholesky = torch.linalg.cholesky(matrix)
        self.inverse = torch.cholesky_inverse(cholesky).float()

    def vcycle(self, residual: Tensor, out: Tensor) -> Tensor:
        x = torch.mul(residual, self.smoother, out=out)
        torch.sub(residual, self.fine.apply(x, self.work), out=self.work)  # the defect, restricted below
        self.levels[0].prolong_add(x, self._coarse(0)).mul_(self.active)
        defect = torch.sub(residual, self.fine.apply(x, self.work), out=self.work)
        return x.addcmul_(defect, self.smoother)

    def _coarse(self, index: int) -> Tensor:
        """The correction on coarse level ``index`` for the defect in the work array above it."""
        level = self.levels[index]
        residual = level.restrict()
        if index == len(self.levels) - 1:
            flat = residual.contiguous().flatten(2)  # (a strided batch-last flatten makes matmul 15x slower)
            level.solution.copy_(torch.matmul(flat, self.inverse).view(residual.shape))
            return level.solution.mul_(level.active)
        x = torch.mul(residual, level.smoother, out=level.solution)
        torch.sub(residual, level.apply(), out=level.work)
        self.levels[index + 1].prolong_add(x, self._coarse(index + 1)).mul_(level.active)
        defect = torch.sub(residual, level.apply(), out=level.work)
        return x.addcmul_(defect, level.smoother)


class _Level:
    """One coarse grid: its stencil, smoother, arrays, and the views its products use (made once:
    on the small grids, making views costs more than the arithmetic)."""

    def __init__(self, stencil: Tensor, active: Tensor, finer: Tensor):
        n, _, height, width = stencil.shape
        shape = (n, finer.shape[1], height, width)
        if finer.shape[0] > 1 and finer.stride(0) == 1:  # batch-last like the arrays it multiplies
            stencil, active = _batch_last(stencil), _batch_last(active)
        self.centre = stencil[:, 4:5]
        self.active = active
        self.smoother = OMEGA * active / self.centre.clamp_min(1e-30)
        self.rhs, self.solution, self.work = (_empty(shape, finer) for _ in range(3))
        self.finer = finer
        self.rows = _empty((*shape[:2], finer.shape[2], width), finer)  # restriction, columns done
        self.cols = _empty((*shape[:2], height, finer.shape[3]), finer)  # prolongation, rows done
        self.products = []  # (work view, stencil view, solution view) per off-centre neighbour
        for k, (dy, dx) in enumerate(STENCIL):
            if k != 4:
                (yd, ys), (xd, xs) = _pair(dy, height), _pair(dx, width)
                coefficient = stencil[:, k : k + 1, yd, xd]
                self.products.append((self.work[..., yd, xd], coefficient, self.solution[..., ys, xs]))

    def restrict(self) -> Tensor:
        """P^T of the finer level's work array, into rhs (zero where no coarse point takes part)."""
        return _restrict(self.finer, self.rhs, self.rows).mul_(self.active)

    def prolong_add(self, x: Tensor, coarse: Tensor) -> Tensor:
        """x += P coarse on the finer grid, in place."""
        return _prolong_add(x, coarse, self.cols)

    def apply(self) -> Tensor:
        """The stencil times this level's solution, into its work array."""
        torch.mul(self.solution, self.centre, out=self.work)
        for out, coefficient, value in self.products:
            out.addcmul_(coefficient, value)
        return self.work


def _restrict(v: Tensor, out: Tensor, rows: Tensor) -> Tensor:
    """P^T v (full weighting): out[i] = v[2i] + (v[2i - 1] + v[2i + 1]) / 2 along each axis, columns
    first into ``rows`` (h, w / 2), then rows into ``out``; v has odd sides 2m - 1."""
    torch.add(v[..., :, 2::2], v[..., :, 1::2], alpha=0.5, out=rows[..., :, 1:])
    rows[..., :, :1] = v[..., :, :1]
    rows[..., :, :-1].add_(v[..., :, 1::2], alpha=0.5)
    torch.add(rows[..., 2::2, :], rows[..., 1::2, :], alpha=0.5, out=out[..., 1:, :])
    out[..., :1, :] = rows[..., :1, :]
    out[..., :-1, :].add_(rows[..., 1::2, :], alpha=0.5)
    return out


def _prolong_add(x: Tensor, coarse: Tensor, cols: Tensor) -> Tensor:
    """x += P coarse (bilinear), in place: rows first into ``cols`` (h / 2, w), then columns."""
    cols[..., 0::2] = coarse
    torch.lerp(coarse[..., :-1], coarse[..., 1:], 0.5, out=cols[..., 1::2])
    x[..., 0::2, :] += cols
    x[..., 1::2, :].add_(cols[..., :-1, :], alpha=0.5).add_(cols[..., 1:, :], alpha=0.5)
    return x


def _fine_stencil(unknown: Tensor, degree: Tensor) -> Tensor:
    """The fine operator as 9 coefficient fields: stencil[:, k, p] = A[p, p + STENCIL[k]], (N, 9, H, W)."""
    n, _, height, width = unknown.shape
    unknown = unknown.contiguous()
    stencil = unknown.new_zeros(n, 9, height, width)
    stencil[:, 4:5] = degree * unknown
    for k, (dy, dx) in enumerate(STENCIL):
        if k != 4:
            (yd, ys), (xd, xs) = _pair(dy, height), _pair(dx, width)
            weight = DIAG if dy and dx else EDGE
            torch.mul(unknown[..., yd, xd], unknown[..., ys, xs], out=stencil[:, k : k + 1, yd, xd]).mul_(-weight)
    return stencil


def _galerkin(stencil: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
    """The coarse operator P^T A P of a grid whose operator has ``stencil`` (N, 9, h, w): (N, 9, h', w')
    stencils, and the coarse points that take part, (N, 1, h', w').

    With p = 2I + a and q = 2J + b (a, b in {-1, 0, 1}^2, J = I + o), the coupling of I and J is
    sum over (a, b) of h(a) h(b) A[p, q], h the bilinear weights (1, 1/2, 1/4), and A[p, q] is
    stencil[q - p] at p with q - p = 2o + b - a: for every coarse offset o a sum of the 9 fine fields
    around 2I with fixed weights, i.e. one convolution of stride 2. (Masks need no care: A is zero
    on every row and column of a pixel that is not an unknown.) A coarse point takes part when its
    masked function is not zero. (Taking only those whose centre is an unknown keeps P of full
    rank, but needs 15-30 CG steps instead of 5-7.)
    """
    n, _, height, width = active.shape
    coarse = ((height + 1) // 2, (width + 1) // 2)
    weights = _galerkin_weights(stencil.device)
    result = F.conv2d(stencil.contiguous(), weights, stride=2, padding=1)
    mask = active.contiguous()
    taking_part = _restrict(mask, mask.new_empty(n, 1, *coarse), mask.new_empty(n, 1, height, coarse[1])) > 0
    return result, taking_part.float()


@functools.lru_cache(maxsize=4)
def _galerkin_weights(device: torch.device) -> Tensor:
    """(9 coarse offsets o, 9 fine offsets k, 3, 3 positions a) weights h(a) h(b), b = k + a - 2o."""
    weights = torch.zeros(9, 9, 3, 3, dtype=torch.float64)
    h = {-1: 0.5, 0: 1.0, 1: 0.5}
    for o, (oy, ox) in enumerate(STENCIL):
        for k, (ky, kx) in enumerate(STENCIL):
            for ay in (-1, 0, 1):
                for ax in (-1, 0, 1):
                    by, bx = ky + ay - 2 * oy, kx + ax - 2 * ox
                    if abs(by) <= 1 and abs(bx) <= 1:
                        weights[o, k, ay + 1, ax + 1] = h[ay] * h[ax] * h[by] * h[bx]
    return weights.float().to(device)


def _dense_matrix(stencil: Tensor, active: Tensor) -> Tensor:
    """(N, n, n) float64 matrix of a stencil; inactive cells get an identity row."""
    n, _, height, width = stencil.shape
    index = torch.arange(height * width, device=stencil.device).view(height, width)
    matrix = torch.zeros(n, height * width, height * width, dtype=torch.float64, device=stencil.device)
    for k, (dy, dx) in enumerate(STENCIL):
        (yd, ys), (xd, xs) = _pair(dy, height), _pair(dx, width)
        matrix[:, index[yd, xd].flatten(), index[ys, xs].flatten()] += stencil[:, k, yd, xd].flatten(1).double()
    return matrix + torch.diag_embed(1.0 - active.flatten(1).double())
