"""Make a patched copy of the checkout: python variant.py SRC DST direct|noasm"""

import shutil
import sys

src, dst, kind = sys.argv[1:]
shutil.copytree(
    src,
    dst,
    ignore=shutil.ignore_patterns(".git", "__pycache__", "*.db", "*.png", "*.pt"),
    dirs_exist_ok=True,
)


def sub(path, old, new, count):
    p = f"{dst}/{path}"
    s = open(p).read()
    assert s.count(old) == count, (path, old, s.count(old))
    open(p, "w").write(s.replace(old, new))


if kind == "direct":
    sub(
        "kernels/dense.py",
        "nx += tl.sum(tl.reshape(af * af, (BLOCK_M, BLOCK_K // 8, 8)), axis=2)",
        "nx += tl.sum(af * af, axis=1)[:, None] / (BLOCK_K // 8)",
        1,
    )
    sub(
        "kernels/dense.py",
        "nw += tl.sum(tl.reshape(bf * bf, (BLOCK_K // 8, 8, BLOCK_N)), axis=1)",
        "nw += tl.sum(bf * bf, axis=0)[None, :] / (BLOCK_K // 8)",
        1,
    )
    sub(
        "kernels/conv.py",
        "nx += tl.sum(tl.reshape(af * af, (BLOCK_M, BLOCK_K // 8, 8)), axis=2)",
        "nx += tl.sum(af * af, axis=1)[:, None] / (BLOCK_K // 8)",
        2,
    )
elif kind == "noasm":
    sub(
        "kernels/_common.py",
        "if a.dtype == tl.bfloat16 and ty == tl.float32 and not _INTERPRETING:",
        "if False:",
        1,
    )
print("variant", kind, "in", dst)
