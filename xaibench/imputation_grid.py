"""The pixel grid of the imputer (``xaibench.imputation``): its operator, array layouts, and the
multigrid preconditioner for deep holes.

Arrays are (N, C, H, W); the operator of one image is the same for all its channels, so masks,
degrees and stencils are (N, 1, H, W) or (N, 9, H, W). Narrow images are stored batch-last (N
innermost in memory, see ``batch_last``); ``empty``, ``take`` and ``put`` keep whichever layout
an array has.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

EDGE, DIAG = 1.0 / 6.0, 1.0 / 12.0
# the 8 neighbours (dy, dx, weight) and the 9-point stencil's offsets (index 4 = the centre)
NEIGHBOURS = tuple((dy, dx, DIAG if dy and dx else EDGE) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
STENCIL = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
OMEGA = 0.9  # Jacobi damping of the smoother (0.7-1.0 give the same CG counts within one step)
COARSEST_SIDE = 8  # multigrid coarsens until the grid is at most this wide (dense inverse there)


def pair(offset: int, size: int) -> tuple[slice, slice]:
    """(positions i, positions i + offset) along one axis where both lie inside [0, size)."""
    if offset > 0:
        return slice(0, size - offset), slice(offset, size)
    if offset < 0:
        return slice(-offset, size), slice(0, size + offset)
    return slice(0, size), slice(0, size)


def degree_field(height: int, width: int, device) -> Tensor:
    """d_p: the summed weight of the neighbours that exist, (1, 1, H, W)."""
    degree = torch.zeros(1, 1, height, width, device=device)
    for dy, dx, weight in NEIGHBOURS:
        (ys, _), (xs, _) = pair(dy, height), pair(dx, width)
        degree[..., ys, xs] += weight
    return degree


def neighbour_sum12(v: Tensor, out: Tensor, rows: Tensor) -> Tensor:
    """12 * sum_q w_q v_q + 4 v: the zero-padded separable [1 2 1] x [1 2 1] filter of v, into out."""
    torch.mul(v, 2, out=rows)
    rows[..., :, 1:] += v[..., :, :-1]
    rows[..., :, :-1] += v[..., :, 1:]
    torch.mul(rows, 2, out=out)
    out[..., 1:, :] += rows[..., :-1, :]
    out[..., :-1, :] += rows[..., 1:, :]
    return out


class Fine:
    """A v = d v - sum_q w_q v_q on the unknowns (v is zero elsewhere), with its scratch array."""

    def __init__(self, unknown: Tensor, degree: Tensor, template: Tensor):
        self.centre = degree + 1.0 / 3.0  # d v - (sum12 - 4 v) / 12
        self.minus12 = unknown * (-1.0 / 12.0)
        self.rows = torch.empty_like(template)

    def apply(self, v: Tensor, out: Tensor) -> Tensor:
        return neighbour_sum12(v, out, self.rows).mul_(self.minus12).addcmul_(v, self.centre)

    def take(self, index: Tensor) -> Fine:
        """The operator of the images ``index`` only."""
        part = object.__new__(Fine)
        part.centre, part.minus12 = self.centre, take(self.minus12, index)
        part.rows = empty((len(index), *self.rows.shape[1:]), self.rows)
        return part


def empty(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised (N, C, H, W) array stored like ``like`` (batch-last or contiguous)."""
    if like.shape[0] > 1 and like.stride(0) == 1:
        return torch.empty(shape[2], shape[3], shape[1], shape[0], device=like.device).permute(3, 2, 0, 1)
    return torch.empty(shape, device=like.device)


def take(t: Tensor, index: Tensor) -> Tensor:
    """The images ``index`` of t, stored like t."""
    if t.shape[0] > 1 and t.stride(0) == 1:
        return t.permute(2, 3, 1, 0).index_select(3, index).permute(3, 2, 0, 1)
    return t.index_select(0, index)


def put(whole: Tensor, index: Tensor, part: Tensor) -> Tensor:
    """whole[index] = part, in place, whatever the layouts; returns whole."""
    if whole.shape[0] > 1 and whole.stride(0) == 1:
        whole.permute(2, 3, 1, 0).index_copy_(3, index, part.permute(2, 3, 1, 0))
    else:
        whole.index_copy_(0, index, part)
    return whole


def batch_last(t: Tensor) -> Tensor:
    """The same (N, C, H, W) tensor stored with N innermost: on small images every shifted slice
    and every per-image sum then runs over long contiguous rows of N values."""
    return t.permute(2, 3, 1, 0).contiguous().permute(3, 2, 0, 1)


def levels(height: int, width: int) -> int:
    """Coarse levels below a (height, width) grid, each (h + 1) / 2 wide, down to COARSEST_SIDE."""
    return max(0, math.ceil(math.log2((max(height, width) - 1) / (COARSEST_SIDE - 1))))


class Multigrid:
    """Symmetric V-cycle, vertex-centred: each coarse point sits on every other fine point.

    Interpolation is bilinear (masked to the unknowns), restriction its transpose, the coarse
    operators Galerkin (P^T A P: 9-point stencils, one strided convolution per level), the smoother
    damped Jacobi, the coarsest grid solved by its inverse. One pre- and one post-smoothing step
    make it symmetric positive definite, as CG needs. With bilinear interpolation CG needs 5-7
    steps; the 2x2 aggregation tried first needed 13-15 (piecewise-constant coarse functions
    represent a smooth error badly, even over-corrected). Stencils are (N, 9, h, w): the operator
    is the same for every channel of an image.
    """

    def __init__(self, unknown: Tensor, degree: Tensor, fine: Fine, levels: int):
        self.fine = fine
        self.active = unknown
        self.smoother = OMEGA * unknown / degree.clamp_min(1e-6)
        self.work = torch.empty_like(fine.rows)
        self.levels: list[Level] = []
        stencil, active, finer = fine_stencil(unknown, degree), unknown, self.work
        for _ in range(levels):
            stencil, active = galerkin(stencil, active)
            self.levels.append(Level(stencil, active, finer))
            finer = self.levels[-1].work
        # the coarsest grid (<= COARSEST_SIDE^2 points) is solved by its explicit (symmetric)
        # inverse: a batched product is 1000x faster than cholesky_solve's per-call LAPACK overhead.
        # Cholesky, not linalg.inv: MKL's batched LU fails on some of these matrices with 2 threads.
        # P^T A P is singular when masked coarse functions are linearly dependent (four of them
        # sharing one fine unknown); those directions are the ones P sends to zero, so a relative
        # shift of the diagonal makes it definite without changing what is prolonged.
        matrix = dense_matrix(stencil, active)
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


class Level:
    """One coarse grid: its stencil, smoother, arrays, and the views its products use (made once:
    on the small grids, making views costs more than the arithmetic)."""

    def __init__(self, stencil: Tensor, active: Tensor, finer: Tensor):
        n, _, height, width = stencil.shape
        shape = (n, finer.shape[1], height, width)
        if finer.shape[0] > 1 and finer.stride(0) == 1:  # batch-last like the arrays it multiplies
            stencil, active = batch_last(stencil), batch_last(active)
        self.centre = stencil[:, 4:5]
        self.active = active
        self.smoother = OMEGA * active / self.centre.clamp_min(1e-30)
        self.rhs, self.solution, self.work = (empty(shape, finer) for _ in range(3))
        self.finer = finer
        self.rows = empty((*shape[:2], finer.shape[2], width), finer)  # restriction, columns done
        self.cols = empty((*shape[:2], height, finer.shape[3]), finer)  # prolongation, rows done
        self.products = []  # (work view, stencil view, solution view) per off-centre neighbour
        for k, (dy, dx) in enumerate(STENCIL):
            if k != 4:
                (yd, ys), (xd, xs) = pair(dy, height), pair(dx, width)
                coefficient = stencil[:, k : k + 1, yd, xd]
                self.products.append((self.work[..., yd, xd], coefficient, self.solution[..., ys, xs]))

    def restrict(self) -> Tensor:
        """P^T of the finer level's work array, into rhs (zero where no coarse point takes part)."""
        return restrict(self.finer, self.rhs, self.rows).mul_(self.active)

    def prolong_add(self, x: Tensor, coarse: Tensor) -> Tensor:
        """x += P coarse on the finer grid, in place."""
        return prolong_add(x, coarse, self.cols)

    def apply(self) -> Tensor:
        """The stencil times this level's solution, into its work array."""
        torch.mul(self.solution, self.centre, out=self.work)
        for out, coefficient, value in self.products:
            out.addcmul_(coefficient, value)
        return self.work


def restrict(v: Tensor, out: Tensor, rows: Tensor) -> Tensor:
    """P^T v (full weighting): out[i] = v[2i] + (v[2i - 1] + v[2i + 1]) / 2 along each axis, columns
    first into ``rows`` (h, w / 2), then rows into ``out``; v has odd sides 2m - 1."""
    torch.add(v[..., :, 2::2], v[..., :, 1::2], alpha=0.5, out=rows[..., :, 1:])
    rows[..., :, :1] = v[..., :, :1]
    rows[..., :, :-1].add_(v[..., :, 1::2], alpha=0.5)
    torch.add(rows[..., 2::2, :], rows[..., 1::2, :], alpha=0.5, out=out[..., 1:, :])
    out[..., :1, :] = rows[..., :1, :]
    out[..., :-1, :].add_(rows[..., 1::2, :], alpha=0.5)
    return out


def prolong_add(x: Tensor, coarse: Tensor, cols: Tensor) -> Tensor:
    """x += P coarse (bilinear), in place: rows first into ``cols`` (h / 2, w), then columns."""
    cols[..., 0::2] = coarse
    torch.lerp(coarse[..., :-1], coarse[..., 1:], 0.5, out=cols[..., 1::2])
    x[..., 0::2, :] += cols
    x[..., 1::2, :].add_(cols[..., :-1, :], alpha=0.5).add_(cols[..., 1:, :], alpha=0.5)
    return x


def fine_stencil(unknown: Tensor, degree: Tensor) -> Tensor:
    """The fine operator as 9 coefficient fields: stencil[:, k, p] = A[p, p + STENCIL[k]], (N, 9, H, W)."""
    n, _, height, width = unknown.shape
    unknown = unknown.contiguous()
    stencil = unknown.new_zeros(n, 9, height, width)
    stencil[:, 4:5] = degree * unknown
    for k, (dy, dx) in enumerate(STENCIL):
        if k != 4:
            (yd, ys), (xd, xs) = pair(dy, height), pair(dx, width)
            weight = DIAG if dy and dx else EDGE
            torch.mul(unknown[..., yd, xd], unknown[..., ys, xs], out=stencil[:, k : k + 1, yd, xd]).mul_(-weight)
    return stencil


def galerkin(stencil: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
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
    weights = galerkin_weights(stencil.device)
    # channels-last input: oneDNN's strided 9-channel convolution runs 2-6x faster in that layout
    # (measured on 640 33x33 stencils, one thread: 62 -> 11 ms); the result goes back to NCHW
    # for the shifted-slice products that use it.
    channels_last = stencil.contiguous(memory_format=torch.channels_last)
    result = F.conv2d(channels_last, weights, stride=2, padding=1).contiguous()
    mask = active.contiguous()
    taking_part = restrict(mask, mask.new_empty(n, 1, *coarse), mask.new_empty(n, 1, height, coarse[1])) > 0
    return result, taking_part.float()


@functools.lru_cache(maxsize=4)
def galerkin_weights(device: torch.device) -> Tensor:
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


def dense_matrix(stencil: Tensor, active: Tensor) -> Tensor:
    """(N, n, n) float64 matrix of a stencil; inactive cells get an identity row."""
    n, _, height, width = stencil.shape
    index = torch.arange(height * width, device=stencil.device).view(height, width)
    matrix = torch.zeros(n, height * width, height * width, dtype=torch.float64, device=stencil.device)
    for k, (dy, dx) in enumerate(STENCIL):
        (yd, ys), (xd, xs) = pair(dy, height), pair(dx, width)
        matrix[:, index[yd, xd].flatten(), index[ys, xs].flatten()] += stencil[:, k, yd, xd].flatten(1).double()
    return matrix + torch.diag_embed(1.0 - active.flatten(1).double())
