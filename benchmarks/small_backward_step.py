"""Where a KernelBench v0 training step's time goes (issue 21), and the small-problem backward
(csrc/cuda/backward/small_backward.cu) against the floor, in one process: Python-driven step
medians (CUDA events, 300 calls) for eager, fusedconv under the measured policy (the floor
backward) and under the fused policy (the small-problem backward), with each one's gradient
errors against float64; the host time of one step (GPU idle before); the CUDA kernels of one
step with their GPU times. Usage (GPU): python benchmarks/small_backward_step.py"""

import statistics
import time

import torch

import fusedconv
from fusedconv.bench import median_event_ms
from fusedconv.reference import Model, reference_gradients_float64, relative_l2_error

torch.backends.cudnn.benchmark = True
torch.manual_seed(0)
model = fusedconv.ModelNew(3, 16, 3).cuda()
eager = Model(3, 16, 3).cuda()  # KernelBench's reference: the same parameter names
eager.load_state_dict(model.state_dict())
x0 = torch.randn(128, 3, 32, 32, device="cuda")
grad = torch.randn(128, 16, 30, 30, device="cuda")
ops = fusedconv.load_extension()
# eager twice, first and last: the spread of the host-bound timing within the run.
SYSTEMS = (("eager", eager, "measured"), ("fusedconv-measured", model, "measured"),
           ("fusedconv-fused", model, "fused"), ("eager", eager, "measured"))
for name, m, policy in SYSTEMS:
    ops._plan_policy(policy)
    params = list(m.parameters())

    def step(x, m=m, params=params):
        x = x.detach().requires_grad_()
        return torch.autograd.grad(m(x), [x] + params, grad)

    def fwd(x, m=m):
        with torch.no_grad():
            return m(x)
    grads = step(x0)
    with torch.no_grad():
        y = model(x0)
    expected = reference_gradients_float64(x0, model.conv.weight, model.conv.bias, grad, y)
    errors = ["%.1e" % relative_l2_error(a, e) for a, e in zip(grads, expected)]
    print("%-20s step ms %.4f  fwd ms %.4f  grad errors %s" % (
        name, median_event_ms(step, [x0], 300, warmup=20),
        median_event_ms(fwd, [x0], 300, warmup=20), errors))
    host = []
    for _ in range(50):
        torch.cuda.synchronize()
        t = time.perf_counter()
        step(x0)
        host.append((time.perf_counter() - t) * 1e3)
    torch.cuda.synchronize()
    print("%-20s host ms per step (median of 50, GPU idle before) %.4f" % (
        name, statistics.median(host)))
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        step(x0)
        torch.cuda.synchronize()
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            print("   kernel %-70s %7.1f us" % (
                event.name[:70], getattr(event, "device_time", None) or event.cuda_time))
ops._plan_policy("measured")
