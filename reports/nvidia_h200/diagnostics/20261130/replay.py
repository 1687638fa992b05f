import os
from pathlib import Path

import torch

os.environ["TRITON_INTERPRET"] = "1"
import kernels.conv as KC
import kernels.dense as KD
from yat_triton._launch import launch

d = torch.load(os.environ.get("REC", str(Path(__file__).with_name("conv_base.pt"))), weights_only=False)
calls = d["calls"]
kern = {n: getattr(KC, n, None) or getattr(KD, n) for n, *_ in calls}
prev = {}
for i, (name, kw, grid, args) in enumerate(calls):
    a2 = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    if (
        name == "yat_conv_bwd_near_kernel"
    ):  # in place on dx / dW part: start from the dgrad's and wgrad's results
        dg = next(c for c in calls if c[0] == "yat_conv_dgrad_kernel")[3][4]
        a2[10] = dg.clone()
        wg = next(c for c in calls if c[0] == "yat_conv_wgrad_kernel")[3][2]
        a2[11] = wg[0].view(64, 3, 3, 64).permute(0, 3, 1, 2).clone()
    kw2 = dict(kw)
    if "UPCAST" in kw2:
        kw2["UPCAST"] = True
    launch(kern[name], grid, *a2, **kw2)
    for j, (g, c) in enumerate(zip(args, a2)):
        if isinstance(g, torch.Tensor) and g.is_floating_point() and g.numel():
            e = ((g.double() - c.double()).abs().max() / c.double().abs().max().clamp(min=1e-30)).item()
            if e > 1e-2:
                print(f"{i} {name} arg {j} {tuple(g.shape)}: GPU vs interpreter rel {e:.3g}")
    print(f"{i} {name} replayed")
