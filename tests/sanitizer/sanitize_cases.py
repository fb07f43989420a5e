"""Small cases for compute-sanitizer: every kernel and dtype once, odd shapes, forward and
backward. Run by scripts/gpu_round.sh --sanitize; exits non-zero on a wrong result.
`sanitize_cases.py candidates` runs only the depthwise candidates' cases,
`sanitize_cases.py channels_last_wgmma` only the channels_last wgmma ones."""

import sys

import torch

import fusedconv
from fusedconv.reference import reference_float64, relative_l2_error

# The tolerances are float32 accuracy: TF32 off for the op (allow_tf32=None follows this flag)
# and for cuDNN's part of the backward.
torch.backends.cudnn.allow_tf32 = False

CASES = [
    # (N, Cin, Cout, H, W, kernel, kwargs, dtype, tolerance); backward too unless kwargs says
    # "forward_only"
    (2, 3, 5, 9, 11, 3, {}, torch.float32, 1e-5),
    # The small-problem backward (every backward of up to 16 output channels and 32 inputs per
    # position under the fused policy): the run-time instance, strided, dilated and padded; then
    # the 3x3 instance with 17 weight-role CTAs per channel (strided: stride 1 goes by bands);
    # the 1x1 instance at stride 2.
    (2, 5, 7, 13, 11, (2, 3), {"stride": (1, 2), "padding": 1, "dilation": (2, 1)},
     torch.float32, 1e-5),
    (64, 3, 16, 32, 32, 3, {"padding": 1, "stride": (1, 2)}, torch.float32, 1e-5),
    (8, 32, 16, 12, 12, 1, {"stride": 2}, torch.float32, 1e-5),
    # Its 3x3 stride-1 layers by bands (the first case above too): 388 CTAs, two levels of sums
    # with a partial last group; padding 2 by rows and 1 by columns.
    (97, 3, 16, 16, 16, 3, {"padding": 1}, torch.float32, 1e-5),
    (3, 2, 3, 12, 9, 3, {"padding": (2, 1)}, torch.float32, 1e-5),
    # The small-problem DMMA kernel (on an A100 / H100) past one pass of its persistent grid,
    # with bounds checks and pairs of positions that straddle two images (odd plane).
    (100, 3, 7, 31, 31, 3, {"padding": 1, "forward_only": True}, torch.float32, 1e-5),
    # Several items per CTA through the Hopper kernel's stage ring (on an H100).
    (3, 8, 64, 40, 128, 3, {}, torch.float32, 1e-5),
    # The streamed Hopper kernel: 5 chunks of 8 input channels (45 k steps), two channel blocks.
    (1, 40, 72, 6, 30, 3, {"padding": 1}, torch.float32, 1e-5),
    # ... and in 16 bits (4-byte pair copies of the 30-wide rows; odd 37-wide rows by plain
    # 2-byte copies, 16-byte copies of 64-wide ones).
    (1, 40, 72, 6, 30, 3, {"padding": 1, "forward_only": True}, torch.bfloat16, 1e-2),
    (1, 40, 40, 5, 37, 3, {"padding": 1, "forward_only": True}, torch.float16, 2e-3),
    (2, 64, 64, 4, 64, 3, {"padding": 1, "forward_only": True}, torch.bfloat16, 1e-2),
    (1, 4, 6, 7, 13, (2, 3), {"padding": "same", "dilation": 2}, torch.float32, 1e-5),
    # Strided, two input-channel chunks and two channel blocks on the mma.sync kernel. Forward
    # only: its backward is the composite one, whose cuDNN sm90 xmma dgrad kernel racecheck
    # flags (a hazard inside cuDNN, not in our code).
    (2, 12, 40, 17, 23, 3, {"stride": 2, "padding": 1, "forward_only": True}, torch.float32,
     1e-5),
    # The same in 16 bits (staged by plain loads, no split; a 9 x 11 plane: scalar stores), and
    # float16 with an even plane (4-byte pair stores) and four 16-channel tiles per CTA.
    (2, 12, 40, 17, 21, 3, {"stride": 2, "padding": 1, "forward_only": True}, torch.bfloat16,
     1e-2),
    (1, 5, 72, 16, 20, 5, {"stride": 2, "padding": 2, "forward_only": True}, torch.float16,
     2e-3),
    # The grouped kernel (both layouts below; NCHW rows by aligned vectors where the width
    # allows): float16 at stride 2 (phased columns, one input chunk of 2 channels); 4-channel
    # blocks on rows of 4-element vectors; 8-channel blocks at stride 2 with six input chunks
    # and a partial last block (2-element vectors);
    # dilated 5x3 with two column tiles of a 140-wide row; the run-time instance of a 3x3 at
    # stride (1, 2).
    (2, 6, 6, 10, 9, 3, {"groups": 3, "stride": 2, "padding": 1}, torch.float16, 2e-3),
    (2, 16, 16, 11, 16, 3, {"groups": 4, "padding": 1}, torch.float32, 1e-5),
    (1, 96, 60, 15, 14, 3, {"groups": 2, "stride": 2, "padding": 1, "forward_only": True},
     torch.bfloat16, 1e-2),
    (1, 12, 12, 6, 140, (5, 3), {"groups": 3, "dilation": (1, 2), "padding": 2,
                                 "forward_only": True}, torch.float32, 1e-5),
    (2, 8, 8, 7, 11, 3, {"groups": 2, "stride": (1, 2), "padding": 1, "forward_only": True},
     torch.bfloat16, 1e-2),
    # The depthwise kernel (both layouts below): the unrolled 3x3 / 5x5 variants at stride 1
    # and 2 with partial strips, and the run-time one (dilated, non-square, multiplier 2).
    (2, 7, 7, 11, 13, 3, {"groups": 7, "padding": 1}, torch.float32, 1e-5),
    (2, 5, 5, 12, 9, 5, {"groups": 5, "stride": 2, "padding": 2}, torch.bfloat16, 1e-2),
    (1, 3, 6, 9, 10, (3, 2), {"groups": 3, "dilation": 2, "padding": 1}, torch.float64, 1e-12),
    # The depthwise backward (both layouts below): 7x7, dilated, strided; then the run-time
    # stride instance with the weight pass in several slices (270 output rows of 23, slices of at
    # least 90 rows; in channels_last 2 vectors x 9 taps x 14 lanes); then 6 channel vectors in
    # channels_last, one more than a weight-pass block holds at 7x7 (a second, partial block).
    (2, 4, 4, 15, 14, 7, {"groups": 4, "padding": 3, "dilation": 2, "stride": 2}, torch.float32,
     1e-5),
    (6, 8, 8, 45, 45, 3, {"groups": 8, "padding": 1, "stride": (1, 2)}, torch.float32, 1e-5),
    (2, 24, 24, 15, 14, 7, {"groups": 24, "padding": 3}, torch.float32, 1e-5),
    # In channels_last, whole 16-byte channel vectors take the vector kernel: three float32
    # vectors with partial strips, two bfloat16 vectors at stride 2.
    (2, 12, 12, 11, 13, 3, {"groups": 12, "padding": 1}, torch.float32, 1e-5),
    (2, 16, 16, 12, 9, 5, {"groups": 16, "stride": 2, "padding": 2}, torch.bfloat16, 1e-2),
    # 16-bit 3x3 in channels_last with dense filters: the vector kernel's resident-filter instance.
    (2, 16, 16, 11, 9, 3, {"groups": 16, "padding": 1}, torch.float16, 2e-3),
    # The channels_last GEMM (channels_last below): 1x1 with partial position and channel
    # tiles, and a strided, padded one; 3x3 / 5x3 with the weight in channels_last too (padded
    # taps, stride, dilation).
    (2, 40, 72, 9, 11, 1, {}, torch.bfloat16, 1e-2),
    (1, 16, 24, 7, 9, 1, {"stride": 2, "padding": 1}, torch.float16, 2e-3),
    (2, 24, 40, 9, 11, 3, {"padding": 1, "weight_channels_last": True}, torch.bfloat16, 1e-2),
    (1, 16, 24, 13, 9, (5, 3), {"stride": 2, "padding": 2, "dilation": (1, 2),
                                "weight_channels_last": True}, torch.float16, 2e-3),
    # Few whole-chunk channels staged as kernel rows' runs by 16-byte copies: 8 of 16 bits at
    # 3x3 (one step a row; KernelBench v0.1's channels) and 5x5 stride 2 (two).
    (2, 8, 64, 13, 11, 3, {"padding": 1, "forward_only": True, "weight_channels_last": True},
     torch.bfloat16, 1e-2),
    (1, 8, 16, 12, 13, 5, {"stride": 2, "padding": 2, "forward_only": True,
                           "weight_channels_last": True}, torch.float16, 2e-3),
    # More tiles than an H200's resident grid: CTAs walk several tiles (128 x 64 and 128 x 32).
    (8, 16, 136, 56, 56, 1, {"forward_only": True}, torch.bfloat16, 1e-2),
    # channels_last only: in NCHW it takes the floor, where on an H100 initcheck does not see
    # cuDNN's writes of y and flagged each 16-byte read of it by our activation pass (106,624
    # reads: all of its 853k float16 elements; the values were right).
    (17, 32, 16, 56, 56, 1, {"forward_only": True, "channels_last_only": True}, torch.float16,
     2e-3),
    (9, 16, 72, 56, 56, 3, {"padding": 1, "forward_only": True, "weight_channels_last": True},
     torch.bfloat16, 1e-2),
    # float32 through it with TF32 allowed (16-channel steps, 4-channel chunks), then 417 tiles
    # of 128 x 32.
    (2, 20, 12, 9, 10, 3, {"padding": 1, "weight_channels_last": True, "allow_tf32": True},
     torch.float32, 3e-3),
    (17, 64, 16, 56, 56, 1, {"forward_only": True, "allow_tf32": True}, torch.float32, 3e-3),
    # ... and in 3xTF32 (TF32 off, float32's tolerance): taps of 20 channels, 8 channels as
    # kernel rows' runs (KernelBench v0.1's).
    (2, 20, 12, 9, 10, 3, {"padding": 1, "weight_channels_last": True, "forward_only": True},
     torch.float32, 1e-5),
    (2, 8, 64, 13, 11, 3, {"padding": 1, "forward_only": True, "weight_channels_last": True},
     torch.float32, 1e-5),
    # Stems (3 input channels: runs of kernel_w x 3 elements by plain loads), padded and strided.
    (2, 3, 16, 15, 17, 3, {"stride": 2, "padding": 1, "weight_channels_last": True},
     torch.bfloat16, 1e-2),
    (1, 3, 8, 19, 16, 7, {"stride": 2, "padding": 3, "weight_channels_last": True,
                          "allow_tf32": True}, torch.float32, 3e-3),
    # float16 / bfloat16 through the resident Hopper kernel: an odd width (plain copies of 2-byte
    # elements, scalar stores), an even one that is no 16-byte multiple (4-byte copies of pairs),
    # and a 16-byte multiple (16-byte copies, 4-byte pair stores, several items per CTA).
    (2, 5, 24, 9, 37, 3, {"padding": 1}, torch.float16, 2e-3),
    (1, 8, 40, 7, 30, 3, {}, torch.float16, 2e-3),
    (3, 8, 64, 40, 64, 3, {}, torch.bfloat16, 1e-2),
    (1, 4, 4, 8, 8, 3, {"padding": 1}, torch.bfloat16, 1e-2),
    (1, 2, 3, 6, 5, 3, {}, torch.float64, 1e-12),
    # The Hopper kernels in channels_last (torch.ops.fusedconv._channels_last_wgmma("all")):
    # resident with several items per CTA (rows copied whole by 16-byte copies, pixels read a
    # 4-channel group at a time, 16-byte stores); 5 channels on odd rows (2-byte elements copied
    # one by one, element stores of 33 channels); streamed 5-chunk float32 and a partial last
    # chunk of 36 float16 channels (per-pixel copies).
    (3, 8, 64, 40, 128, 3, {"forward_only": True, "channels_last_wgmma": True}, torch.float32,
     1e-5),
    (1, 5, 33, 9, 37, 3, {"padding": 1, "forward_only": True, "channels_last_wgmma": True},
     torch.bfloat16, 1e-2),
    (1, 40, 72, 6, 30, 3, {"padding": 1, "forward_only": True, "channels_last_wgmma": True},
     torch.float32, 1e-5),
    (1, 36, 40, 5, 37, 3, {"padding": 1, "forward_only": True, "channels_last_wgmma": True},
     torch.float16, 2e-3),
    # The floor backward summing grad_bias in its g pass (every backward above that takes the
    # floor, under the fused policy): ragged channel rows over five CTAs' columns in
    # channels_last, 3 x 3 planes element by element in NCHW; then 16-byte vectors both ways.
    (1, 4, 1030, 5, 6, 1, {"stride": 2}, torch.float32, 1e-5),
    (2, 8, 264, 8, 8, 1, {}, torch.bfloat16, 1e-2),
    # The depthwise candidates (torch.ops.fusedconv._depthwise_candidates("all")). NCHW rows:
    # 16-byte float32 rows with a partial row group; multiplier 2 in 8-byte rows at stride 2;
    # 4-byte bfloat16 rows through the transposed 3x3 grad_input; a row of one 4-byte vector
    # with a 5x5 halo past both ends; 16-byte float16 rows at stride 2 from an odd height (in
    # channels_last one vector of staged filters). Then 258 channel vectors of staged filters,
    # more than a CTA's threads, 7 items per thread.
    (2, 6, 6, 9, 8, 3, {"groups": 6, "padding": 1, "candidates": True}, torch.float32, 1e-5),
    (2, 4, 8, 7, 12, 5, {"groups": 4, "padding": 2, "stride": 2, "candidates": True},
     torch.float32, 1e-5),
    (2, 5, 5, 10, 12, 3, {"groups": 5, "padding": 1, "stride": 2, "candidates": True},
     torch.bfloat16, 1e-2),
    (1, 3, 3, 11, 2, 5, {"groups": 3, "padding": 2, "candidates": True}, torch.float16, 2e-3),
    (3, 8, 8, 13, 16, 5, {"groups": 8, "padding": 2, "stride": 2, "candidates": True},
     torch.float16, 2e-3),
    (1, 2064, 2064, 5, 6, 3, {"groups": 2064, "padding": 1, "candidates": True}, torch.bfloat16,
     1e-2),
    # The forward and grad_input by planes (NCHW outside the rows): 7 x 7 output planes, 18 of
    # them, a plane a forward block; 776 planes of 7 x 7, three a forward block on 132 SMs
    # (two in the last); then dilated bfloat16 planes of exactly 1024 elements through the
    # run-time instance.
    (3, 6, 6, 14, 14, 5, {"groups": 6, "padding": 2, "stride": 2, "candidates": True},
     torch.float32, 1e-5),
    (8, 97, 97, 7, 7, 5, {"groups": 97, "padding": 2, "candidates": True}, torch.float32, 1e-5),
    (1, 10, 10, 32, 32, 3, {"groups": 10, "padding": 1, "dilation": 2, "candidates": True},
     torch.bfloat16, 1e-2),
]


def main(argv):
    fusedconv.load_extension()
    torch.manual_seed(0)
    failures = 0
    only = argv[1] if len(argv) > 1 else None
    for n, cin, cout, h, w, kernel, kwargs, dtype, tolerance in CASES:
        if only is not None and not kwargs.get(only, False):
            continue
        kwargs = dict(kwargs)
        backward = not kwargs.pop("forward_only", False)
        weight_channels_last = kwargs.pop("weight_channels_last", False)
        allow_tf32 = kwargs.pop("allow_tf32", None)
        candidates = "all" if kwargs.pop("candidates", False) else "none"
        previous_candidates = torch.ops.fusedconv._depthwise_candidates(candidates)
        wgmma_choice = "all" if kwargs.pop("channels_last_wgmma", False) else "none"
        previous_wgmma = torch.ops.fusedconv._channels_last_wgmma(wgmma_choice)
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        groups = kwargs.get("groups", 1)
        x = torch.randn(n, cin, h, w, device="cuda", dtype=dtype, requires_grad=True)
        weight = torch.randn(cout, cin // groups, kh, kw, device="cuda", dtype=dtype,
                             requires_grad=True)
        bias = torch.randn(cout, device="cuda", dtype=dtype, requires_grad=True)
        layouts = (torch.contiguous_format, torch.channels_last)
        if kwargs.pop("channels_last_only", False):
            layouts = (torch.channels_last,)
        for layout in layouts:
            xl = x.detach().contiguous(memory_format=layout).requires_grad_()
            wl = weight
            if weight_channels_last and layout == torch.channels_last:
                wl = weight.detach().contiguous(memory_format=layout).requires_grad_()
            if wgmma_choice == "all" and layout == torch.channels_last:
                # The case exists to sanitize that kernel: fail if a shape change sent it away.
                padding = kwargs.get("padding", 0)
                plan = torch.ops.fusedconv._plan(xl, wl, bias, [1, 1], [padding] * 4, [1, 1], 1,
                                                 allow_tf32)
                if plan != "wgmma":
                    failures += 1
                    print("FAILED: planned", plan, (n, cin, cout, h, w, kernel, kwargs, dtype))
            y = fusedconv.conv2d_hardswish_relu(xl, wl, bias, allow_tf32=allow_tf32, **kwargs)
            if backward:
                y.backward(torch.randn_like(y))
            error = relative_l2_error(y, reference_float64(xl, wl, bias, **kwargs))
            if not error < tolerance:
                failures += 1
                print("FAILED", (n, cin, cout, h, w, kernel, kwargs, dtype, layout), error)
        torch.ops.fusedconv._depthwise_candidates(previous_candidates)
        torch.ops.fusedconv._channels_last_wgmma(previous_wgmma)
    torch.cuda.synchronize()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
