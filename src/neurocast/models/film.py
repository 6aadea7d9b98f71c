"""POCO's FiLM readout, y = W_out ((W_a e + b_a) * ReLU(W_in x + b_in)), computed in row blocks.

The reference expression (:func:`film_reference`) materialises six (rows, hidden) tensors per
training step (the pre-activation, ReLU output, alpha, their product and, in the backward pass,
the gradients of the product, of alpha and of the ReLU), each 34 MB for a batch of 64 windows of
130 units and a hidden width of 1024, and each a fresh allocation that the operating system
page-faults in. :class:`BlockedFiLM` keeps only the two tensors the backward pass needs (the
ReLU output h and alpha) and does everything else a block of rows at a time in buffers that stay
in cache: the same products and sums, so the same function and gradients up to float32 rounding
(different summation order in the weight-gradient sums).

Second derivatives (E2E-TTT's outer gradient) go through the reference expression: when the
backward pass itself is recorded (``create_graph=True``), it recomputes the reference with
autograd and differentiates that, so higher-order gradients are exact too.

Used on CPU only: on a GPU the caching allocator already reuses memory, and one large kernel
beats many small ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: rows per block: (512, 1024) float32 buffers are 2 MB, inside a core's share of L3
BLOCK_ROWS = 512


def film_reference(x, e, w_in, b_in, w_a, b_a, w_out):
    """W_out ((W_a e + b_a) * ReLU(W_in x + b_in)) for x (M, C), e (M, d): (M, P), no bias."""
    return F.linear(F.linear(e, w_a, b_a) * torch.relu(F.linear(x, w_in, b_in)), w_out)


def _blocked_forward(x, e, w_in, b_in, w_a, b_a, w_out, block: int, keep: bool):
    """y, and (if ``keep``) the two (M, H) tensors the backward pass needs: the ReLU output h
    and alpha where the ReLU is open (zero where it is closed), a block of rows at a time."""
    M, H = x.shape[0], w_in.shape[0]
    n_buf = min(block, M)
    h = x.new_empty(M if keep else n_buf, H)
    a_open = x.new_empty(M, H) if keep else None
    a = x.new_empty(n_buf, H)
    z = x.new_empty(n_buf, H)
    y = x.new_empty(M, w_out.shape[0])
    w_in_t, w_a_t, w_out_t = w_in.t(), w_a.t(), w_out.t()
    for s in range(0, M, block):
        rows = slice(s, min(s + block, M))
        n = rows.stop - s
        hb = h[rows] if keep else h[:n]
        torch.addmm(b_in, x[rows], w_in_t, out=hb).relu_()
        ab = torch.addmm(b_a, e[rows], w_a_t, out=a[:n])
        if keep:
            torch.ops.aten.threshold_backward.grad_input(ab, hb, 0.0, grad_input=a_open[rows])
        torch.mm(torch.mul(hb, ab, out=z[:n]), w_out_t, out=y[rows])
    return y, (h if keep else None), a_open


class BlockedFiLM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, e, w_in, b_in, w_a, b_a, w_out, block: int):
        y, h, a_open = _blocked_forward(x, e, w_in, b_in, w_a, b_a, w_out, block, keep=True)
        ctx.save_for_backward(x, e, w_in, b_in, w_a, b_a, w_out, h, a_open)
        ctx.block = block
        return y

    @staticmethod
    def backward(ctx, gy):
        x, e, w_in, b_in, w_a, b_a, w_out, h, a_open = ctx.saved_tensors
        need = ctx.needs_input_grad
        if torch.is_grad_enabled():
            # the backward pass is being differentiated (create_graph=True): recompute the
            # reference expression with autograd so that second derivatives are exact
            # (the saved tensors carry their own graphs, so the result depends on them too)
            inputs = (x, e, w_in, b_in, w_a, b_a, w_out)
            wanted = [t for t, n in zip(inputs, need) if n]
            y = film_reference(*inputs)
            got = iter(torch.autograd.grad(y, wanted, gy, create_graph=True, allow_unused=True))
            return (*(next(got) if n else None for n in need[:7]), None)

        M, H = h.shape
        block = ctx.block
        gx = torch.empty_like(x) if need[0] else None
        ge = torch.empty_like(e) if need[1] else None
        gw_in, gb_in = torch.zeros_like(w_in), torch.zeros_like(b_in)
        gw_a, gb_a = torch.zeros_like(w_a), torch.zeros_like(b_a)
        gw_out = torch.zeros_like(w_out)
        t1 = h.new_empty(min(block, M), H)
        t2 = h.new_empty(min(block, M), H)
        gy = gy.contiguous()
        for s in range(0, M, block):
            rows = slice(s, min(s + block, M))
            hb, ab, g = h[rows], a_open[rows], gy[rows]
            n = hb.shape[0]
            gz = torch.mm(g, w_out, out=t1[:n])                  # d loss / d (alpha * h)
            gw_out.addmm_(g.t(), torch.mul(hb, ab, out=t2[:n]))  # alpha * h = a_open * h
            ga = torch.mul(gz, hb, out=t2[:n])                   # d loss / d alpha
            gw_a.addmm_(ga.t(), e[rows])
            gb_a.add_(ga.sum(0))
            if ge is not None:
                torch.mm(ga, w_a, out=ge[rows])
            gh = gz.mul_(ab)                                     # d loss / d pre-activation
            gw_in.addmm_(gh.t(), x[rows])
            gb_in.add_(gh.sum(0))
            if gx is not None:
                torch.mm(gh, w_in, out=gx[rows])
        return (gx, ge, gw_in if need[2] else None, gb_in if need[3] else None, gw_a if need[4] else None,
                gb_a if need[5] else None, gw_out if need[6] else None, None)


def film_readout(x, e, w_in, b_in, w_a, b_a, w_out, block: int | None = 0):
    """The FiLM readout without its output bias: (M, C), (M, d) -> (M, P).

    Blocked (:class:`BlockedFiLM`, ``block`` rows at a time; 0: :data:`BLOCK_ROWS`) for float32
    CPU tensors; the reference expression otherwise (GPU, other dtypes, ``block=None``).
    """
    block = block or BLOCK_ROWS
    if block is None or x.device.type != "cpu" or x.dtype != torch.float32:
        return film_reference(x, e, w_in, b_in, w_a, b_a, w_out)
    tensors = tuple(t.contiguous() for t in (x, e, w_in, b_in, w_a, b_a, w_out))
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return BlockedFiLM.apply(*tensors, block)
    with torch.no_grad():
        return _blocked_forward(*tensors, block, keep=False)[0]
