"""The stacked 1x1 host's block as fused CPU kernels (issue 34): conv, BatchNorm, 2x2 max-pool
and ReLU in one pass that writes only the pooled output and each window's argmax.

The reference is ``envs.stacked`` (PyTorch ops in the z layout); this computes the same
function with the memory passes fused:

- BatchNorm's batch statistics of a 1x1 conv's output z = w . x are w . E[x] and w' Cov(x) w,
  so they come from the input's mean and covariance (float64), read once for all K hosts at
  block 0 (the input is shared) and once per host later: no pass over z.
- The forward writes relu(max of the window's four affine values) and the window's first
  maximum (MaxPool2d's rule on ties) as one byte: nothing of size M is kept for the backward.
- The backward of BatchNorm in training mode, dz = (gamma / sigma) (dy - mean(dy) - xhat
  mean(dy xhat)), is linear in x where dy is 0 (three of every four positions, more after the
  ReLU), so the weight gradient is the sparse sum over the argmax positions plus moments of x,
  and the input gradient is W' (A dy) + a0 + G x per position (``_input_grad``).

Numba compiles the kernels on first use (cached on disk beside this file); forward values and
gradients equal the reference's to float rounding (tests/envs/test_fused.py). Where the
reference and this part on an exact tie of two window values after rounding, the argmax (and so
one gradient entry) differs: over whole episodes trajectories part as float order already makes
the stacked and the one-host paths part (docs/results/fused-host-semantics).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numba import njit
from torch import Tensor

# Windows per inner loop of the forward kernel: four rows of it stay in L1.
_CHUNK = 512


# Reductions may be reordered (vectorised float64 sums); nothing assumes finite values, so a NaN
# in a host still reaches its loss.
_REDUCE = {"reassoc", "contract"}


@njit(cache=True, fastmath=_REDUCE)
def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - numba
    """Sums (G, C) and cross sums (G, C, C) of x (G, C, M) over M, in float64."""
    g_n, c_n, m_n = x.shape
    s1 = np.zeros((g_n, c_n))
    s2 = np.zeros((g_n, c_n, c_n))
    for g in range(g_n):
        for i in range(c_n):
            acc = 0.0
            for m in range(m_n):
                acc += x[g, i, m]
            s1[g, i] = acc
            for j in range(i, c_n):
                acc = 0.0
                for m in range(m_n):
                    acc += np.float64(x[g, i, m]) * x[g, j, m]
                s2[g, i, j] = acc
                s2[g, j, i] = acc
    return s1, s2


@njit(cache=True)
def _forward(x: np.ndarray, w: np.ndarray, t: np.ndarray, out: np.ndarray,
             arg: np.ndarray) -> None:  # pragma: no cover - numba
    """out[k, c, p] = relu(max_q y_q), y_q = w[k, c] . x[g, :, q P + p] + t[k, c] (w already
    scaled by BatchNorm's gamma / sigma); arg = the first q reaching the max. g = 0 when x
    is shared by every host (G = 1), else k. A chunk of windows is read once for every host
    (the shared input stays in cache) and the inner loops run branch-free over contiguous
    memory, so they vectorise."""
    k_n, c_n, ci_n = w.shape
    p_n = out.shape[2]
    shared = x.shape[0] == 1
    y = np.empty((4, _CHUNK), dtype=np.float32)
    for p0 in range(0, p_n, _CHUNK):
        n = min(_CHUNK, p_n - p0)
        for k in range(k_n):
            g = 0 if shared else k
            for c in range(c_n):
                shift = t[k, c]
                # 1-D slices indexed by the loop variable: no negative-index wrap, so the
                # loops compile to contiguous vector loads.
                for q in range(4):
                    yq = y[q, :n]
                    yq[:] = shift
                    for j in range(ci_n):
                        wj = w[k, c, j]
                        xq = x[g, j, q * p_n + p0:q * p_n + p0 + n]
                        for i in range(n):
                            yq[i] += wj * xq[i]
                out_row = out[k, c, p0:p0 + n]
                arg_row = arg[k, c, p0:p0 + n]
                y0, y1, y2, y3 = y[0], y[1], y[2], y[3]
                for i in range(n):
                    a = y0[i]
                    b = y1[i]
                    cc = y2[i]
                    d = y3[i]
                    # The first maximum in the window's row-major order (a, b, c, d), as
                    # envs.stacked.MaxPoolReLU: the top row if its max >= the bottom row's.
                    left_top = a >= b
                    top = a if left_top else b
                    left_bottom = cc >= d
                    bottom = cc if left_bottom else d
                    in_top = top >= bottom
                    peak = top if in_top else bottom
                    q_top = 0 if left_top else 1
                    q_bottom = 2 if left_bottom else 3
                    arg_row[i] = q_top if in_top else q_bottom
                    # NaN stays NaN (a NaN host must give a non-finite loss, as the reference).
                    out_row[i] = np.float32(0.0) if peak <= 0.0 else peak


@njit(cache=True, fastmath=_REDUCE)
def _grad_sums(x: np.ndarray, w: np.ndarray, mu: np.ndarray, inv_sigma: np.ndarray,
               grad: np.ndarray, out: np.ndarray, arg: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - numba
    """Over the positions that receive a gradient (each window's argmax where the output is
    positive): sum dy (K, C), sum dy xhat (K, C) and sum dy x (K, C, C_in), float64; w is the
    raw conv weight, xhat = (w . x - mu) inv_sigma."""
    k_n, c_n, ci_n = w.shape
    p_n = out.shape[2]
    shared = x.shape[0] == 1
    s_dy = np.zeros((k_n, c_n))
    s_dyxhat = np.zeros((k_n, c_n))
    s_dyx = np.zeros((k_n, c_n, ci_n))
    dy = np.empty(_CHUNK)
    z = np.empty(_CHUNK)
    for p0 in range(0, p_n, _CHUNK):
        n = min(_CHUNK, p_n - p0)
        for k in range(k_n):
            g = 0 if shared else k
            for c in range(c_n):
                grad_row = grad[k, c, p0:p0 + n]
                out_row = out[k, c, p0:p0 + n]
                arg_row = arg[k, c, p0:p0 + n]
                dyc = dy[:n]
                zc = z[:n]
                for i in range(n):
                    dyc[i] = grad_row[i] if out_row[i] > 0.0 else 0.0
                    zc[i] = 0.0
                for j in range(ci_n):
                    wj = w[k, c, j]
                    # The argmax's input read as a select over the window's four contiguous
                    # quarters: vector loads, no gather.
                    x0 = x[g, j, p0:p0 + n]
                    x1 = x[g, j, p_n + p0:p_n + p0 + n]
                    x2 = x[g, j, 2 * p_n + p0:2 * p_n + p0 + n]
                    x3 = x[g, j, 3 * p_n + p0:3 * p_n + p0 + n]
                    acc = 0.0
                    for i in range(n):
                        q = arg_row[i]
                        lo = x0[i] if q == 0 else x1[i]
                        hi = x2[i] if q == 2 else x3[i]
                        xj = np.float64(lo if q < 2 else hi)
                        zc[i] += wj * xj
                        acc += dyc[i] * xj
                    s_dyx[k, c, j] += acc
                acc_dy = 0.0
                acc_dyz = 0.0
                for i in range(n):
                    acc_dy += dyc[i]
                    acc_dyz += dyc[i] * zc[i]
                s_dy[k, c] += acc_dy
                # sum dy xhat = (sum dy z - mu sum dy) inv_sigma, finished below.
                s_dyxhat[k, c] += acc_dyz
    for k in range(k_n):
        for c in range(c_n):
            s_dyxhat[k, c] = (s_dyxhat[k, c] - mu[k, c] * s_dy[k, c]) * inv_sigma[k, c]
    return s_dy, s_dyxhat, s_dyx


@njit(cache=True)
def _input_grad(x: np.ndarray, w: np.ndarray, a_dy: np.ndarray, a0: np.ndarray,
                gmat: np.ndarray, grad: np.ndarray, out: np.ndarray, arg: np.ndarray,
                dx: np.ndarray) -> None:  # pragma: no cover - numba
    """dx[k, :, m] = a0[k] + gmat[k] x[k, :, m] + sum_c w[k, c] a_dy[k, c] dy[k, c, m]: the
    BatchNorm backward's dense part (linear in x) plus the gradient at each window's argmax."""
    k_n, c_n, ci_n = w.shape
    p_n = out.shape[2]
    dy = np.empty(_CHUNK, dtype=np.float32)
    for k in range(k_n):
        for p0 in range(0, p_n, _CHUNK):
            n = min(_CHUNK, p_n - p0)
            for q in range(4):
                lo = q * p_n + p0
                for i in range(ci_n):
                    dxq = dx[k, i, lo:lo + n]
                    dxq[:] = a0[k, i]
                    for j in range(ci_n):
                        gij = gmat[k, i, j]
                        xq = x[k, j, lo:lo + n]
                        for m in range(n):
                            dxq[m] += gij * xq[m]
            for c in range(c_n):
                scale = a_dy[k, c]
                grad_row = grad[k, c, p0:p0 + n]
                out_row = out[k, c, p0:p0 + n]
                arg_row = arg[k, c, p0:p0 + n]
                dyc = dy[:n]
                for m in range(n):
                    dyc[m] = scale * grad_row[m] if out_row[m] > 0.0 else np.float32(0.0)
                # Each quarter adds the gradient where it holds the window's argmax.
                for q in range(4):
                    lo = q * p_n + p0
                    for i in range(ci_n):
                        wci = w[k, c, i]
                        dxq = dx[k, i, lo:lo + n]
                        for m in range(n):
                            dxq[m] += wci * dyc[m] if arg_row[m] == q else np.float32(0.0)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class FusedPointwiseBlock(torch.autograd.Function):
    """One stacked 1x1 block in training mode: (x, conv w, BatchNorm gamma, beta) -> the pooled,
    rectified output (K, C_out, M / 4) in the z layout, and the running statistics updated as
    BatchNorm updates them. x is (C_in, M) shared by all K hosts (block 0) or (K, C_in, M)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, gamma: Tensor, beta: Tensor,
                running_mean: Tensor, running_var: Tensor, momentum: float, eps: float
                ) -> Tensor:
        k_n, c_n, _ = w.shape
        x3 = x.unsqueeze(0) if x.dim() == 2 else x  # a shared input: one row for all
        xs = _np(x3)
        m_n = xs.shape[2]
        s1, s2 = _moments(xs)
        # Each host's input moments, (K, C_in) and (K, C_in, C_in): a shared input's for all.
        mean_x = np.broadcast_to(s1 / m_n, (k_n, s1.shape[1]))
        second = np.broadcast_to(s2 / m_n, (k_n, *s2.shape[1:]))
        cov = second - mean_x[:, :, None] * mean_x[:, None, :]
        w64 = w.detach().double().numpy()
        mu = np.einsum("kci,ki->kc", w64, mean_x)
        var = np.maximum(np.einsum("kci,kij,kcj->kc", w64, cov, w64), 0.0)
        inv_sigma = 1.0 / np.sqrt(var + eps)
        gamma64 = gamma.detach().double().numpy()
        scale = gamma64 * inv_sigma
        shift = beta.detach().double().numpy() - mu * scale
        out = np.empty((k_n, c_n, m_n // 4), dtype=np.float32)
        arg = np.empty((k_n, c_n, m_n // 4), dtype=np.uint8)
        _forward(xs, (w64 * scale[:, :, None]).astype(np.float32), shift.astype(np.float32),
                 out, arg)
        with torch.no_grad():
            # As F.batch_norm: the running variance is the unbiased one.
            rm, rv = running_mean.view(k_n, c_n), running_var.view(k_n, c_n)
            rm.mul_(1 - momentum).add_(torch.from_numpy(mu).to(rm.dtype), alpha=momentum)
            rv.mul_(1 - momentum).add_(torch.from_numpy(var * m_n / (m_n - 1)).to(rv.dtype),
                                       alpha=momentum)
        result = torch.from_numpy(out)
        # The backward reads only these arrays (xs views x's memory and keeps it alive).
        ctx.numpy = (xs, w64, mu, inv_sigma, gamma64, mean_x, cov, out, arg)
        return result

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        xs, w64, mu, inv_sigma, gamma64, mean_x, cov, out, arg = ctx.numpy
        m_n = xs.shape[2]
        g = _np(grad)
        s_dy, s_dyxhat, s_dyx = _grad_sums(xs, w64, mu, inv_sigma, g, out, arg)
        a = gamma64 * inv_sigma  # (K, C)
        mean_dy, mean_dyxhat = s_dy / m_n, s_dyxhat / m_n
        # dW = sum_m dz_m x_m with dz_m = a (dy_m - mean_dy - xhat_m mean_dyxhat) and
        # sum_m xhat_m x_m = M Cov w inv_sigma.
        cov_w = np.einsum("kij,kcj->kci", cov, w64)
        sum_x = mean_x * m_n  # (K, C_in)
        grad_w = a[:, :, None] * (s_dyx - mean_dy[:, :, None] * sum_x[:, None, :]
                                  - (mean_dyxhat * inv_sigma)[:, :, None] * m_n * cov_w)
        grad_x = None
        if ctx.needs_input_grad[0]:
            # dz_m = a dy_m + alpha + beta . x_m, alpha = a (mean_dyxhat inv_sigma mu - mean_dy),
            # beta_c = -a mean_dyxhat inv_sigma w_c; dx_m = W' dz_m.
            coef = a * mean_dyxhat * inv_sigma
            alpha = coef * mu - a * mean_dy
            a0 = np.einsum("kci,kc->ki", w64, alpha)
            gmat = -np.einsum("kci,kc,kcj->kij", w64, coef, w64)
            dx = np.empty_like(xs)
            _input_grad(xs, w64.astype(np.float32), a.astype(np.float32),
                        a0.astype(np.float32), gmat.astype(np.float32), g, out, arg, dx)
            grad_x = torch.from_numpy(dx)
        dtype = grad.dtype
        return (grad_x, torch.from_numpy(grad_w).to(dtype), torch.from_numpy(s_dyxhat).to(dtype),
                torch.from_numpy(s_dy).to(dtype), None, None, None, None)


def eval_block(x: Tensor, w: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """One stacked 1x1 block in eval mode (BatchNorm's running statistics folded into
    ``scale`` and ``shift``, (R, C_out)): x is (C_in, M) shared by every row or (R, C_in, M);
    returns the pooled, rectified output (R, C_out, M / 4) in the z layout."""
    x3 = x.unsqueeze(0) if x.dim() == 2 else x
    rows, c_out = scale.shape
    out = np.empty((rows, c_out, x3.shape[2] // 4), dtype=np.float32)
    arg = np.empty(out.shape, dtype=np.uint8)
    _forward(_np(x3), _np(w * scale[:, :, None]), _np(shift), out, arg)
    return torch.from_numpy(out)
